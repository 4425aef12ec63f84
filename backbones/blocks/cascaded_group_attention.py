"""Cascaded group attention (EfficientViT-MSRA, CVPR 2023, arXiv:2305.07027) and its local-window wrapper.

The C input channels are split into h equal chunks x_1..x_h (d = C / h channels each). Head i attends over
its own chunk plus the previous head's output, so later heads refine earlier ones:

    z_1 = x_1,   z_i = x_i + o_{i-1}                              (i > 1)
    q_i, k_i, v_i = split(QKV_i(z_i))                              QKV_i: 1x1 Conv-BN, d -> 2 * key_dim + d
    q_i = DW_i(q_i)                                                k_i x k_i depthwise Conv-BN on q only
    o_i = v_i softmax(q_i^T k_i / sqrt(key_dim) + B_i)^T           over the N = R * R tokens of a window
    y = Proj(ReLU(concat(o_1..o_h)))                               Proj: 1x1 Conv-BN, h * d -> C

B_i[p, p'] = b_i[|y_p - y_p'| * R + |x_p - x_p'|] is a learned bias per head over the R * R sign-less offsets
of an R x R window (``attention_biases`` (h, R * R), gathered through ``attention_bias_idxs``). The gather runs
on every call, so the biases can never go stale: loading weights, ``.to()`` or an in-place edit in eval mode
all take effect at once (the official code caches the gathered table in ``train(False)``, see
``shared/reference/halonet_efficientvit.md`` B.4; the gather is a few microseconds).

:class:`LocalWindowAttention` runs the cascade inside non-overlapping R x R windows: a map of exactly R x R is
attended whole; any other size is zero-padded at the bottom/right to multiples of R, partitioned, attended and
cropped back. Padding happens before the qkv projections and is not masked (as in the official and timm
models, whose weights this must reproduce), so padded positions act as extra tokens carrying the BN shift.

Shapes: input and output (B, C, H, W); any H and W for :class:`LocalWindowAttention`, exactly R x R for
:class:`CascadedGroupAttention`. State-dict keys match timm's ``efficientvit_msra`` (``qkvs.{i}``, ``dws.{i}``,
``proj.1``, ``attention_biases``; the index buffer is non-persistent).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module, resize_rel_pos_bias_table_levit
from torch import Tensor, nn

from ._windows import is_compiling, reshape_copy
from .conv_norm import ConvNorm

__all__ = ["CascadedGroupAttention", "LocalWindowAttention", "window_offset_index"]


def window_offset_index(window_size: int, device=None) -> Tensor:
    """(N, N) long index, N = window_size**2, of the sign-less offset |dy| * window_size + |dx| between tokens."""
    coords = torch.arange(window_size, device=device)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    return (yy[:, None] - yy[None, :]).abs() * window_size + (xx[:, None] - xx[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one R x R window (see the module docstring for the math).

    Args:
        dim: channels C of input and output; split into ``num_heads`` chunks of ``dim // num_heads``.
        key_dim: channels of q and k per head.
        num_heads: number of heads h.
        window_size: side R of the window the attention biases are defined on; input must be R x R.
        kernels: depthwise kernel size on q, per head (only the first ``num_heads`` are used).
        proj_bn_init: initial gamma of the output projection's BatchNorm (0: the branch starts as zero).
    """

    def __init__(
        self,
        dim: int,
        key_dim: int = 16,
        num_heads: int = 4,
        window_size: int = 7,
        kernels: Sequence[int] = (5, 5, 5, 5),
        proj_bn_init: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if len(kernels) < num_heads:
            raise ValueError(f"kernels needs one kernel size per head ({num_heads}), got {tuple(kernels)}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.key_dim = key_dim
        # The cascade adds head i's output to head i+1's input chunk, so v has the chunk's width.
        self.val_dim = dim // num_heads
        self.scale = key_dim**-0.5
        self.window_size = window_size
        self.qkvs = nn.ModuleList(ConvNorm(self.val_dim, 2 * key_dim + self.val_dim, **dd) for _ in range(num_heads))
        self.dws = nn.ModuleList(
            ConvNorm(key_dim, key_dim, k, padding=k // 2, groups=key_dim, **dd) for k in kernels[:num_heads]
        )
        # ReLU sits before the projection (on the concatenated head outputs): key `proj.1`.
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.val_dim * num_heads, dim, bn_weight_init=proj_bn_init, **dd))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size, **dd))
        self.register_buffer("attention_bias_idxs", window_offset_index(window_size, device), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        """Rebuild the offset index (after creation on the meta device)."""
        self.attention_bias_idxs = window_offset_index(self.window_size, self.attention_biases.device)

    @torch.no_grad()
    def set_window_size(self, window_size: int) -> None:
        """Change R: the bias tables are resized (bicubic, as timm does for checkpoints) and the index rebuilt."""
        if window_size == self.window_size:
            return
        n = window_size * window_size
        table = resize_rel_pos_bias_table_levit(self.attention_biases.T, (n, self.num_heads)).T.contiguous()
        self.attention_biases = nn.Parameter(table, requires_grad=self.attention_biases.requires_grad)
        self.window_size = window_size
        self.init_non_persistent_buffers()

    def forward(self, x: Tensor) -> Tensor:
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        if H * W != self.window_size**2:
            expected = f"CascadedGroupAttention: expected x of shape (B, C, {self.window_size}, {self.window_size})"
            if torch.jit.is_scripting():
                raise ValueError(expected + " (one window), got " + str(x.shape))
            else:
                raise ValueError(
                    f"{expected} (one window), got {tuple(x.shape)}; use LocalWindowAttention for other sizes"
                )
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (h, N, N), gathered afresh every call
        chunks = x.chunk(self.num_heads, dim=1)
        outs = []
        feat = chunks[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + chunks[i]
            out = qkv(feat)  # (B, 2 key_dim + val_dim, R, R)
            # k and v cut from the flattened output, and bmm (what @ runs for 3-d operands) without matmul's
            # reshapes: flattening a channel slice or matmul's reshape reads the strides, which under torch.export
            # is a guard on the window count (the batch here)
            k, v = out.flatten(2)[:, self.key_dim :].split([self.key_dim, self.val_dim], dim=1)
            q = dw(out[:, : self.key_dim]).flatten(2)  # (B, key_dim, N)
            attn = torch.bmm(q.transpose(-2, -1), k) * self.scale + bias[i]  # (B, N, N)
            feat = torch.bmm(v, attn.softmax(dim=-1).transpose(-2, -1)).view(B, self.val_dim, H, W)
            outs.append(feat)
        return self.proj(torch.cat(outs, dim=1))


@register_notrace_module  # reason: the one-window shortcut and the padding are control flow on the input size
class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping windows of any-size maps.

    Args:
        dim, key_dim, num_heads, kernels, proj_bn_init: as :class:`CascadedGroupAttention`.
        window_size: window side R.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int = 16,
        num_heads: int = 4,
        window_size: int = 7,
        kernels: Sequence[int] = (5, 5, 5, 5),
        proj_bn_init: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.attn = CascadedGroupAttention(
            dim, key_dim, num_heads, window_size, kernels, proj_bn_init, device=device, dtype=dtype
        )

    @property
    def window_size(self) -> int:
        return self.attn.window_size

    def set_window_size(self, window_size: int) -> None:
        self.attn.set_window_size(window_size)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        ws = self.attn.window_size
        # Size shortcuts only in eager mode: under torch.compile / export one graph serves every size.
        compiling = is_compiling()
        if not compiling and H == ws and W == ws:
            return self.attn(x)
        pad_b, pad_r = (H + ws - 1) // ws * ws - H, (W + ws - 1) // ws * ws - W
        if compiling or pad_b or pad_r:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        nh, nw = (H + pad_b) // ws, (W + pad_r) // ws
        # reshape_copy / clone: no stride-dependent view-or-copy choice (a guard on the size) under tracing
        x = reshape_copy(x.view(B, C, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5), [B * nh * nw, C, ws, ws])
        x = self.attn(x)
        x = reshape_copy(x.view(B, nh, nw, C, ws, ws).permute(0, 3, 1, 4, 2, 5), [B, C, nh * ws, nw * ws])
        if compiling:  # the crop as a negative pad: a fresh H x W map, no bounds check (a runtime assert) to export
            x = F.pad(x, (0, -pad_r, 0, -pad_b))
        elif pad_b or pad_r:
            x = x[:, :, :H, :W].contiguous()
        return x
