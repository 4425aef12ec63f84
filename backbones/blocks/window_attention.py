"""Non-shifted window self-attention without positional bias (DaViT "spatial" attention, ECCV 2022,
arXiv:2204.03645).

The map is cut into non-overlapping wh x ww windows; inside each window, h heads of dimension d = C / h attend
over the wh * ww tokens:

    q, k, v = split(x W_qkv + b_qkv)                 per window, per head: (wh * ww, d)
    y = proj(concat_heads(softmax(q k^T / sqrt(d)) v))

No relative position bias, no shift, no mask: position enters the network only through the convolutional
position encodings around the block. H and W need not be multiples of the window: the map is zero-padded on
the right/bottom, the padded tokens take part as keys and values (their k and v are the qkv bias, exactly as in
the official code and timm, so pretrained weights give the same numbers), and the output is cropped back.

Shapes: input and output (B, H, W, C), channels-last. State-dict keys ``qkv`` and ``proj`` (as timm's DaViT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import use_fused_attn
from torch import Tensor, nn

from ._checks import check_shape
from ._windows import is_compiling, pad_to_multiple, reshape_copy, to_2tuple_int, window_partition

__all__ = ["WindowAttention"]


def _merge_heads_and_windows(x: Tensor, batch: int, window_size: tuple[int, int], height: int, width: int) -> Tensor:
    """(B * nWh * nWw, heads, wh * ww, d) -> (B, H, W, heads * d): head merge and window reverse in one copy."""
    wh, ww = window_size
    heads, d = x.shape[1], x.shape[3]
    x = x.view(batch, height // wh, width // ww, heads, wh, ww, d)
    return reshape_copy(x.permute(0, 1, 4, 2, 5, 3, 6), [batch, height, width, heads * d])


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows of a channels-last map.

    Args:
        dim: channels C.
        num_heads: attention heads (C must be divisible by it).
        window_size: window side, int or (wh, ww).
        qkv_bias: bias in the qkv projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int] = 7,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = to_2tuple_int(window_size)
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"WindowAttention: expected x of shape (B, H, W, {self.dim})")
        b, h, w = x.shape[0], x.shape[1], x.shape[2]
        x = pad_to_multiple(x, self.window_size)  # zeros after the norm: padded k, v are the qkv bias
        hp, wp = x.shape[1], x.shape[2]
        x = window_partition(x, self.window_size)  # (B * nW, N, C), N = wh * ww
        bw, n = x.shape[0], x.shape[1]
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = F.dropout(attn, drop) @ v
        x = _merge_heads_and_windows(x, b, self.window_size, hp, wp)  # (B, Hp, Wp, C), one copy
        # a view of all of x when nothing was padded: no size test, so one captured graph serves every size
        x = x.narrow(1, 0, h).narrow(2, 0, w)
        if is_compiling():  # a fresh copy: the crop's strides would make proj guard on "nothing padded" (export)
            x = x.clone(memory_format=torch.contiguous_format)
        # proj is per token, so it runs after the crop and skips the padded tokens
        return self.proj_drop(self.proj(x))
