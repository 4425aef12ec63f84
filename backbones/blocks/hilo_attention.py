"""HiLo attention (LITv2, "Fast Vision Transformers with HiLo Attention", NeurIPS 2022, arXiv:2205.13213).

The heads of one attention layer are split between two branches that read the same input x (B, H, W, C)
(head width d = C / num_heads, s = ``window_size``, scale d^-0.5 in both):

    n_lo = floor(num_heads * alpha)                        Lo-Fi heads; n_hi = num_heads - n_lo Hi-Fi heads
    Hi-Fi: q, k, v = x W_hi                                 (n_hi * d channels each)
           O_hi = softmax(q k^T / sqrt(d)) v                 inside each non-overlapping s x s window
    Lo-Fi: q = x W_q;  k, v = AvgPool_s(x) W_kv             every query attends to the (H/s)(W/s) pooled tokens
           O_lo = softmax(q k^T / sqrt(d)) v
    y = [proj_hi(O_hi) | proj_lo(O_lo)]                      concatenated, Hi-Fi channels first, no joint projection

Hi-Fi keeps the local detail (high frequencies) at a cost linear in H*W; Lo-Fi captures global structure (low
frequencies) against s^2 times fewer keys. ``alpha = 0`` gives Hi-Fi only (plain window attention), ``alpha = 1``
Lo-Fi only; ``window_size = 1`` makes every head a Lo-Fi head without pooling, i.e. plain global multi-head
self-attention (as the official code does for LITv2's last stage, whatever alpha is).

Any H and W. The Hi-Fi windows need H, W to be multiples of s: the map is zero-padded bottom/right and cropped
back. The Lo-Fi branch only pools: its queries are the real tokens, and the last pooled row/column covers fewer
than s real pixels when H or W is not a multiple of s.

* ``mask_padding=True``: padded tokens are kept out of the Hi-Fi softmax and a border pooled token is the mean
  of the real pixels it covers, so every real token sees exactly the real map.
* ``mask_padding=False``: the official numerics (ziplab/LITv2 detection / segmentation backbones, needed for
  their weights where padding happens, e.g. the ws = 4 detection models): the normalised input is zero-padded
  before both branches, so padded tokens take part in the Hi-Fi softmax with key = value = the projection bias,
  and the pooling averages the zeros in.

Both branches run on ``scaled_dot_product_attention``. Shapes: input and output (B, H, W, C), channels-last.
State-dict keys: ``hifi_qkv``, ``hifi_proj`` (when there are Hi-Fi heads), ``lofi_q``, ``lofi_kv``, ``lofi_proj``
(when there are Lo-Fi heads); the official names are ``h_qkv``, ``h_proj``, ``l_q``, ``l_kv``, ``l_proj``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn

from ._checks import check_shape
from ._windows import avg_pool_ceil, is_compiling, pad_to_multiple, window_partition, window_reverse

__all__ = ["HiLoAttention"]


@register_notrace_module  # reason: the padding mask is built only when the input size needs one
class HiLoAttention(nn.Module):
    """High/low-frequency split attention over a channels-last map (see the module docstring for the math).

    Args:
        dim: channels C of the input and the output.
        num_heads: heads of both branches together; C must be divisible by it.
        window_size: s, the side of the Hi-Fi windows and of the Lo-Fi pooling. 1 means global attention.
        alpha: share of the heads given to Lo-Fi (floored: ``int(num_heads * alpha)``, as the official code).
        qkv_bias: bias in the q/k/v projections.
        qk_scale: softmax scale (default head_dim^-0.5).
        attn_drop: attention dropout (training only).
        proj_drop: dropout on the output.
        mask_padding: keep the padding out of the Hi-Fi softmax and out of the Lo-Fi pooled means
            (``False``: the official numerics).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window_size: int = 2,
        alpha: float = 0.5,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        mask_padding: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"HiLoAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"HiLoAttention: alpha must be in [0, 1], got {alpha}")
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"HiLoAttention: window_size must be a positive int, got {window_size!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.alpha = alpha
        self.mask_padding = mask_padding
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        if window_size == 1:  # pooling by 1 changes nothing: all heads are global (official behaviour)
            self.lofi_heads = num_heads
        else:
            self.lofi_heads = int(num_heads * alpha)
        self.hifi_heads = num_heads - self.lofi_heads
        self.lofi_dim = self.lofi_heads * self.head_dim
        self.hifi_dim = self.hifi_heads * self.head_dim

        # absent branches are None attributes (no state-dict keys): TorchScript then compiles only the present ones
        self.hifi_qkv = self.hifi_proj = self.lofi_q = self.lofi_kv = self.lofi_proj = None
        if self.hifi_heads:
            self.hifi_qkv = nn.Linear(dim, 3 * self.hifi_dim, bias=qkv_bias, **dd)
            self.hifi_proj = nn.Linear(self.hifi_dim, self.hifi_dim, **dd)
        if self.lofi_heads:
            self.lofi_q = nn.Linear(dim, self.lofi_dim, bias=qkv_bias, **dd)
            self.lofi_kv = nn.Linear(dim, 2 * self.lofi_dim, bias=qkv_bias, **dd)
            self.lofi_proj = nn.Linear(self.lofi_dim, self.lofi_dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def _hifi(self, x: Tensor) -> Tensor:
        b, h, w = x.shape[0], x.shape[1], x.shape[2]
        s, heads, d = self.window_size, self.hifi_heads, self.head_dim
        x = pad_to_multiple(x, s)  # (B, Hp, Wp, C)
        hp, wp = x.shape[1], x.shape[2]
        n_win = (hp // s) * (wp // s)
        qkv = window_partition(self.hifi_qkv(x), (s, s))  # (B * nW, s*s, 3 * n_hi * d)
        # (B * nW, s*s, 3, heads, d) -> 3 x (B * nW, heads, s*s, d): 4-D, so fused kernels apply
        q, k, v = qkv.view(b * n_win, s * s, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        mask: Tensor | None = None
        if self.mask_padding and (is_compiling() or hp != h or wp != w):  # traced: no branch on the size
            real = torch.zeros(1, hp, wp, 1, dtype=torch.bool, device=x.device)
            real[:, :h, :w] = True
            mask = window_partition(real, (s, s)).view(1, n_win, s * s)  # keys that are real pixels
            mask = mask.expand(b, -1, -1).reshape(b * n_win, 1, 1, s * s)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )  # (B * nW, heads, s*s, d)
        out = out.transpose(1, 2).reshape(b * n_win, s * s, self.hifi_dim)
        out = window_reverse(out, (s, s), hp, wp)
        if is_compiling():  # a fresh copy: the crop's strides would make the Linear guard on "nothing padded"
            out = out.narrow(1, 0, h).narrow(2, 0, w).clone(memory_format=torch.contiguous_format)
        else:
            out = out[:, :h, :w]
        return self.hifi_proj(out)

    def _lofi(self, x: Tensor) -> Tensor:
        b, h, w = x.shape[0], x.shape[1], x.shape[2]
        s, heads, d = self.window_size, self.lofi_heads, self.head_dim
        q = self.lofi_q(x).view(b, h * w, heads, d).transpose(1, 2)  # (B, heads, N, d)
        if s > 1:
            x = x.permute(0, 3, 1, 2)  # NCHW view for the pooling
            if self.mask_padding:  # a border window is the mean of the real pixels it covers
                x = avg_pool_ceil(x, s)
            else:
                x = F.avg_pool2d(pad_to_multiple(x, s, channels_last=False), s, s)
            x = x.permute(0, 2, 3, 1)  # (B, ceil(H/s), ceil(W/s), C)
        k, v = self.lofi_kv(x).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, M, d)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, h, w, self.lofi_dim)
        return self.lofi_proj(out)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"HiLoAttention: expected x of shape (B, H, W, {self.dim}) (channels-last)")
        if self.lofi_q is None:
            out = self._hifi(x)
        elif self.hifi_qkv is None:
            out = self._lofi(x)
        else:
            out = torch.cat([self._hifi(x), self._lofi(x)], dim=-1)  # Hi-Fi channels first, as the weights expect
        return self.proj_drop(out)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads} (hifi {self.hifi_heads}, lofi {self.lofi_heads}), "
            f"window_size={self.window_size}, alpha={self.alpha}, mask_padding={self.mask_padding}"
        )
