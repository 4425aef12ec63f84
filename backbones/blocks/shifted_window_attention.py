"""Shifted-window self-attention with a relative position bias (Swin, Liu et al., ICCV 2021, arXiv:2103.14030),
over a channels-last map.

The map is cut into non-overlapping wh x ww windows; inside each window, h heads of dimension d attend with a learned
bias indexed by the relative offset of the two tokens (a (2 wh - 1)(2 ww - 1) x h table):

    y = proj(concat_heads(softmax(q k^T / sqrt(d) + B_rel + M) v))

With ``shift_size`` s > 0 the map is rolled by (-s, -s) first and back afterwards, and M = -100 between tokens that
came from different regions of the unrolled map (Swin's mask); M = 0 otherwise. The class is a subclass of timm's
``WindowAttention`` (same keys: ``qkv``, ``proj``, ``relative_position_bias_table``; the index is a non-persistent
buffer) and runs the parent's in-window attention, its operations in its order (fused or explicit softmax as the
parent chooses), in a method of its own so that TorchScript can compile it. Any size: the map is zero-padded right /
bottom to a multiple of the window *before* the roll (the order of the official Agent-Swin dense backbones; Swin's
own classifier never pads), padded tokens take part as keys, the output is cropped. A map that fits in one window
is not shifted (Swin's rule for small maps: a shift would only wrap the window onto itself); under torch.compile /
torch.export that rule is arithmetic (a one-window map rolls by 0 under an all-zero mask, the same numbers), so the
graph holds no branch on the size.

Shapes: input and output (B, H, W, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from timm.models.swin_transformer import WindowAttention
from torch import Tensor

from ._checks import check_shape
from ._windows import is_compiling, pad_to_multiple, to_2tuple_int, window_partition, window_reverse

__all__ = ["ShiftedWindowAttention"]


def _shift_mask(
    hp: int, wp: int, window: tuple[int, int], shift: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """(nW, N, N) additive mask: 0 within a region of the rolled (hp, wp) map, -100 across regions."""
    region = torch.zeros(hp, wp, device=device, dtype=dtype)
    cuts_h = [0, hp - window[0], hp - shift, hp]  # lists: TorchScript indexes tuples by constants only
    cuts_w = [0, wp - window[1], wp - shift, wp]
    for i in range(3):
        for j in range(3):
            region[cuts_h[i] : cuts_h[i + 1], cuts_w[j] : cuts_w[j + 1]] = 3 * i + j
    ids = window_partition(region[None, :, :, None], window)[..., 0]  # (nW, N)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def _roll(x: Tensor, shift: int, back: bool) -> Tensor:
    """``torch.roll`` of dims 1 and 2 by ``-shift`` (``back``: by ``+shift``), for a shift below both sizes; traced,
    as concatenations of two slices per dim (the same values): ONNX's Roll translation takes constant shifts only,
    and the traced shift is symbolic."""
    if not is_compiling():
        return torch.roll(x, shifts=(shift, shift) if back else (-shift, -shift), dims=(1, 2))
    for dim in (1, 2):
        n = x.shape[dim]
        cut = n - shift if back else shift  # the input index the output starts at
        x = torch.cat((x.narrow(dim, cut, n - cut), x.narrow(dim, 0, cut)), dim=dim)
    return x


@register_notrace_module  # reason: whether to shift depends on the map size (Swin's rule for small maps)
class ShiftedWindowAttention(WindowAttention):
    """Swin's (shifted) window attention on a (B, H, W, C) map (module docstring).

    Args:
        dim: channels C.
        num_heads: heads h.
        window_size: window side, int or (wh, ww).
        shift_size: cyclic shift s (0: plain windows; Swin alternates 0 and window // 2).
        qkv_bias: bias of the qkv projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int] = 7,
        shift_size: int = 0,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        window = to_2tuple_int(window_size)
        if not 0 <= shift_size < min(window):
            raise ValueError(f"ShiftedWindowAttention: shift_size must be in [0, {min(window)}), got {shift_size}")
        super().__init__(dim, num_heads, window_size=window, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop, device=device, dtype=dtype)  # fmt: skip
        self.shift_size = shift_size

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"ShiftedWindowAttention: expected x of shape (B, H, W, {self.dim})")
        h, w = x.shape[1], x.shape[2]
        window, s = self.window_size, self.shift_size
        x = pad_to_multiple(x, window)
        hp, wp = x.shape[1], x.shape[2]
        shifted = s > 0 and (is_compiling() or h > window[0] or w > window[1])
        shift = 0
        mask: Tensor | None = None
        if shifted:
            # s, or 0 for a map that fits in one window (Swin's rule), as arithmetic: traced, the graph holds no
            # branch on the size (a one-window map then rolls by 0 under an all-zero mask: the unshifted numbers)
            extra = hp // window[0] + wp // window[1] - 2  # windows beyond the first
            shift = s * ((extra + hp + wp - 1) // (hp + wp))
            x = _roll(x, shift, back=False)
            mask = _shift_mask(hp, wp, window, shift, x.device, x.dtype)
        y = self._window_attention(window_partition(x, window), mask)  # (B * nW, N, C)
        y = window_reverse(y, window, hp, wp)
        if shifted:
            y = _roll(y, shift, back=True)
        return y[:, :h, :w]

    def _window_attention(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The in-window attention of the parent class, (B * nW, N, C) in and out, with the same operations in the
        same order (the same numbers on both of its paths, fused or explicit softmax), written here because
        TorchScript cannot call ``super().forward``. ``mask``: (nW, N, N), added per window."""
        bw, n, heads = x.shape[0], x.shape[1], self.num_heads
        q, k, v = self.qkv(x).reshape(bw, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B * nW, h, N, d)
        rel_bias = self._get_rel_pos_bias()  # (1, h, N, N)
        if self.fused_attn:
            if mask is not None:  # one (h, N, N) bias per window, repeated over the batch
                per_window = mask.view(1, mask.shape[0], 1, n, n).expand(bw // mask.shape[0], -1, heads, -1, -1)
                rel_bias = rel_bias + per_window.reshape(-1, heads, n, n)
            p = self.attn_drop.p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=rel_bias, dropout_p=p)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1) + rel_bias
            if mask is not None:  # (B, nW, h, N, N) + (1, nW, 1, N, N)
                logits = (logits.view(-1, mask.shape[0], heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
            y = self.attn_drop(self.softmax(logits)) @ v
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(bw, n, -1)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, shift={self.shift_size}"
