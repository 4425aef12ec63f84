"""Helpers for window-based mixers: pad a map to a multiple of the window, cut it into windows, put it back.

Layout is channels-last: maps are (B, H, W, C). With window (wh, ww) and H, W multiples of it,

    window_partition: (B, H, W, C) -> (B * H/wh * W/ww, wh * ww, C)   windows in row-major order per image,
                                                                       tokens row-major inside each window
    window_reverse:   the inverse, given H and W.

``pad_to_multiple`` zero-pads right and bottom only (top-left content keeps its coordinates, so cropping back is
``x[:, :H, :W]``). It works for channels-last (B, H, W, C) and channels-first (B, C, H, W) maps.
``avg_pool_ceil`` is ``F.avg_pool2d(x, s, s, ceil_mode=True)`` (a border window is the mean of the real pixels it
covers) in a form every backend gets right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import Tensor

__all__ = [
    "avg_pool_ceil",
    "is_compiling",
    "pad_to_multiple",
    "reshape_copy",
    "window_partition",
    "window_reverse",
    "to_2tuple_int",
]


def is_compiling() -> bool:
    """Whether torch.compile / torch.export is tracing this call (False in eager mode and under TorchScript).

    Size-dependent shortcuts (skip a zero pad, skip a full-size crop) are taken only when this is False: under
    tracing they would make the graph depend on the example size (a guard, or a failed dynamic-shape export).
    """
    if torch.jit.is_scripting():
        return False
    else:
        return torch.compiler.is_compiling()


def reshape_copy(x: Tensor, shape: list[int]) -> Tensor:
    """``x.reshape(shape)`` for an ``x`` that reshape copies (a permuted view); under torch.compile / torch.export
    always a contiguous copy then a view: reshape's view-or-copy choice reads the strides, which with a one-window
    grid (a size-1 dimension) becomes a guard on the input size and fails a dynamic-shape export elsewhere."""
    if is_compiling():
        return x.clone(memory_format=torch.contiguous_format).view(shape)
    return x.reshape(shape)


def to_2tuple_int(value: int | tuple[int, int], name: str = "window_size") -> tuple[int, int]:
    """``(v, v)`` for an int, the pair itself for a pair; a clear error for anything else or non-positive sizes."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, tuple | list) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair


@register_notrace_function  # reason: the no-padding shortcut is control flow on the input size
def pad_to_multiple(x: Tensor, multiple: int | tuple[int, int], channels_last: bool = True) -> Tensor:
    """Zero-pad the spatial dims of ``x`` on the right/bottom up to multiples of ``multiple`` (h, w).

    Args:
        x: (B, H, W, C) if ``channels_last`` else (B, C, H, W).
        multiple: int or (mh, mw).
        channels_last: layout of ``x``.
    Returns:
        ``x`` itself when no padding is needed (eager), else the padded copy. Under torch.compile / torch.export
        the pad is always taken (a zero pad is a copy), so the graph holds no branch on the input size and one
        program serves every size.
    """
    if torch.jit.is_scripting():
        if isinstance(multiple, int):
            mh, mw = multiple, multiple
        else:
            mh, mw = multiple
    else:
        mh, mw = to_2tuple_int(multiple, "multiple")
    h, w = (x.shape[-3], x.shape[-2]) if channels_last else (x.shape[-2], x.shape[-1])
    # ceil(h / m) * m - h written with one floor division: a form symbolic shapes simplify (torch.export)
    pad_h, pad_w = (h + mh - 1) // mh * mh - h, (w + mw - 1) // mw * mw - w
    if not is_compiling() and pad_h == 0 and pad_w == 0:
        return x
    if channels_last:
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return F.pad(x, (0, pad_w, 0, pad_h))


def window_partition(x: Tensor, window_size: tuple[int, int]) -> Tensor:
    """(B, H, W, C) with H, W multiples of the window -> (B * nWh * nWw, wh * ww, C)."""
    b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    wh, ww = window_size
    x = x.view(b, h // wh, wh, w // ww, ww, c)  # (B, nWh, wh, nWw, ww, C)
    return reshape_copy(x.transpose(2, 3), [-1, wh * ww, c])


def window_reverse(windows: Tensor, window_size: tuple[int, int], height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nWh * nWw, wh * ww, C) -> (B, height, width, C)."""
    wh, ww = window_size
    c = windows.shape[-1]
    x = windows.view(-1, height // wh, width // ww, wh, ww, c)  # (B, nWh, nWw, wh, ww, C)
    return reshape_copy(x.transpose(2, 3), [-1, height, width, c])


@register_notrace_function  # reason: the no-padding shortcut is control flow on the input size
def avg_pool_ceil(x: Tensor, s: int) -> Tensor:
    """s x s, stride-s mean pooling of a (B, C, H, W) map with partial border windows (ceil mode), any H and W.

    The numbers of ``F.avg_pool2d(x, s, s, ceil_mode=True)``, written as the zero-padded mean divided by the share
    of each window that is real: inductor's ceil-mode backward divides the border windows by s * s
    (pytorch/pytorch#198119, open in torch 2.15), and ONNX AveragePool's ceil mode counts them differently.
    """
    h, w = x.shape[-2], x.shape[-1]
    pooled = F.avg_pool2d(pad_to_multiple(x, s, channels_last=False), s, s)
    if is_compiling() or h % s != 0 or w % s != 0:
        real = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        pooled = pooled / F.avg_pool2d(pad_to_multiple(real, s, channels_last=False), s, s)
    return pooled
