"""Input checks that keep working under graph capture (TorchScript, FX, torch.compile, torch.export).

A check written inline as ``if x.ndim != 4: raise ...`` stops FX (a shape is a Proxy there) and TorchScript
(``tuple(x.shape)`` does not script). These helpers hold the checks instead: they return their input, so a block
writes ``x = check_shape(x, ...)`` and the check stays on the data path of every captured graph (FX keeps them as
leaf calls, timm's ``register_notrace_function``; TorchScript and torch.export run them as ordinary code). Eager
messages are unchanged: ``"<expected>, got (B, C, H, W)"``.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_function
from torch import Tensor

__all__ = ["check_shape"]


@register_notrace_function  # reason: shape comparisons are control flow on Proxies
def check_shape(x: Tensor, ndim: int, dim: int, axis: int, expected: str, min_ndim: bool = False) -> Tensor:
    """``x`` itself; a ``ValueError`` naming ``expected`` and the shape of ``x`` when it does not fit.

    Args:
        x: the tensor to check.
        ndim: its number of dims (at least that many with ``min_ndim``).
        dim: the size ``x`` must have along ``axis`` (negative: any size).
        axis: the channel axis.
        expected: the message up to the shape, e.g. ``"ConvFFN: expected x of shape (B, H, W, 64)"``.
        min_ndim: ``ndim`` is a lower bound.
    """
    bad_ndim = x.dim() < ndim if min_ndim else x.dim() != ndim
    if bad_ndim or (dim >= 0 and x.shape[axis] != dim):
        if torch.jit.is_scripting():
            raise ValueError(expected + ", got " + str(x.shape))
        else:
            raise ValueError(f"{expected}, got {tuple(x.shape)}")
    return x
