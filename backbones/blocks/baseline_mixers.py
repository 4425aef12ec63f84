"""Baseline token mixers for hybrid backbones: pooling (PoolFormer), depthwise convolution and global attention.

All take and return (B, H, W, C) channels-last maps of any H and W:

    PoolMixer:        y = AvgPool_{k x k, stride 1}(x) - x         PoolFormer (Yu et al., CVPR 2022, arXiv:2111.11418);
                                                                   border windows average the real pixels only
                                                                   (``count_include_pad=False``); the "- x" cancels
                                                                   the residual's copy of x
    DWConvMixer:      y = DWConv_{k x k}(x) + b                     depthwise "same" convolution (ConvNeXt-style
                                                                   spatial mixing without the channel MLP)
    GlobalAttention:  q, k, v = split(x W_qkv + b_qkv)              h heads of d = C / h channels over all N = H * W
                      y = proj(concat_h softmax(q k^T / sqrt(d)) v)  tokens (ViT, Dosovitskiy et al., arXiv:2010.11929),
                                                                   run by ``F.scaled_dot_product_attention``

The pooling and the convolution run on an NCHW *view* of the channels-last tensor (``permute``, no copy): PyTorch
treats it as a channels_last-format NCHW tensor and returns channels_last output, whose permute back is a contiguous
(B, H, W, C) tensor again.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_shape
from .head_mixture import build_head_mixture

__all__ = ["PoolMixer", "DWConvMixer", "GlobalAttention"]


class PoolMixer(nn.Module):
    """PoolFormer's token mixer: average pooling minus identity (no parameters).

    Args:
        pool_size: odd side k of the pooling window (3 in PoolFormer).
    """

    def __init__(self, dim: int | None = None, pool_size: int = 3):
        super().__init__()
        if pool_size < 1 or pool_size % 2 != 1:
            raise ValueError(f"PoolMixer: pool_size must be a positive odd int (a centred window), got {pool_size}")
        self.dim = dim
        self.pool_size = pool_size
        channels = "C" if dim is None else str(dim)
        self._expected = f"PoolMixer: expected x of shape (B, H, W, {channels}) (channels-last)"  # + the shape got

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, -1 if self.dim is None else self.dim, -1, self._expected)
        k = self.pool_size
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), k, 1, k // 2, count_include_pad=False)
        return pooled.permute(0, 2, 3, 1) - x

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


class DWConvMixer(nn.Module):
    """Depthwise k x k convolution with bias over a channels-last map.

    Args:
        dim: channels C.
        kernel_size: odd kernel side (7 as ConvNeXt).
    """

    def __init__(self, dim: int, kernel_size: int = 7, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"DWConvMixer: kernel_size must be a positive odd int, got {kernel_size}")
        self.dim = dim
        self.conv = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias, device=device, dtype=dtype
        )

    def forward(self, x: Tensor) -> Tensor:
        expected = f"DWConvMixer: expected x of shape (B, H, W, {self.dim}) (channels-last)"
        x = check_shape(x, 4, self.dim, -1, expected)
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all H * W tokens of a channels-last map.

    Args:
        dim: channels C.
        num_heads: heads h (C must be divisible by h).
        qkv_bias: bias in the fused qkv projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        moh: ``dict(shared_heads=S, routed_heads=k)``: Mixture-of-Head re-weighting of the head outputs before
            ``proj`` (:class:`backbones.blocks.head_mixture.HeadMixture`); None (default): plain heads.

    State-dict keys ``qkv`` ([q | k | v], each head-major) and ``proj``, as timm's ViT ``Attention`` (plus ``moh.*``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        moh: dict | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"GlobalAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.moh = build_head_mixture(dim, num_heads, moh, "GlobalAttention", **dd)

    def forward(self, x: Tensor) -> Tensor:
        expected = f"GlobalAttention: expected x of shape (B, H, W, {self.dim}) (channels-last)"
        x = check_shape(x, 4, self.dim, -1, expected)
        b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        # (B, N, 3, heads, d) -> 3 x (B, heads, N, d)
        q, k, v = self.qkv(x).view(b, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2)  # (B, N, heads, d)
        if self.moh is not None:
            out = self.moh(x.reshape(b, h * w, c), out)
        out = out.reshape(b, h, w, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
