"""Convolutional GLU (TransNeXt, CVPR 2024, arXiv:2311.17132), the channel mixer of TransNeXt blocks.

A gated linear unit whose gate branch sees its 3x3 neighbourhood through a depthwise convolution:

    [a | b] = x W1 + b1                      fc1: C -> 2h, split into halves of h channels (a first)
    y = (GELU(DWConv3x3(a)) * b) W2 + b2     dwconv: depthwise, bias; fc2: h -> C

The convolution gives every token a little positional information and local context, which is why TransNeXt
needs no position embedding. TransNeXt keeps the parameter count of a 4x MLP by shrinking the hidden width:
its blocks use ``hidden_features = int(2 * int(dim * mlp_ratio) / 3)`` (see :func:`glu_hidden_features`).

Shapes: input and output (B, H, W, C), any H and W (the convolution pads by 1). State-dict keys are ``fc1``,
``dwconv`` and ``fc2``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_shape

__all__ = ["ConvGLU", "glu_hidden_features"]


def glu_hidden_features(dim: int, mlp_ratio: float) -> int:
    """Hidden width TransNeXt gives a ConvGLU that replaces an MLP of ratio ``mlp_ratio`` (same parameter budget)."""
    return int(2 * int(dim * mlp_ratio) / 3)


class ConvGLU(nn.Module):
    """Convolutional GLU over a channels-last map (see the module docstring for the math).

    Args:
        in_features: channels C of the input.
        hidden_features: width h of each GLU half (the depthwise conv has h channels).
        out_features: output channels (default: ``in_features``).
        kernel_size: depthwise kernel size (odd; 3 in TransNeXt).
        act_layer: activation of the gate branch.
        drop: dropout after the gating and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        kernel_size: int = 3,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvGLU: kernel_size must be odd, got {kernel_size}")
        dd = dict(device=device, dtype=dtype)
        out_features = out_features or in_features
        self.hidden_features = hidden_features
        self.fc1 = nn.Linear(in_features, 2 * hidden_features, **dd)
        self.dwconv = nn.Conv2d(
            hidden_features, hidden_features, kernel_size, padding=kernel_size // 2, groups=hidden_features, **dd
        )
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, **dd)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, -1, -1, "ConvGLU: expected x of shape (B, H, W, C)")
        gate, value = self.fc1(x).chunk(2, dim=-1)  # (B, H, W, h) each
        # NCHW view of a channels-last copy: the depthwise conv runs in channels-last memory format and its output,
        # permuted back, is a contiguous (B, H, W, h) tensor again.
        gate = gate.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        gate = self.act(self.dwconv(gate)).permute(0, 2, 3, 1)
        x = self.drop1(gate * value)
        return self.drop2(self.fc2(x))
