"""Convolution + BatchNorm and BatchNorm + Linear pairs that fold into one layer for inference.

In eval mode BatchNorm is the affine map ``y = gamma * (x - mean) / sqrt(var + eps) + beta``. With
``s = gamma / sqrt(var + eps)`` (per channel):

    ConvNorm:    bn(conv(x; W))  = conv(x; W * s[:, None, None, None]) + (beta - mean * s)
    NormLinear:  linear(bn(x))   = x @ (W * s[None, :]).T + (W @ (beta - mean * s) + b)

``fuse()`` returns the single layer (``nn.Conv2d`` / ``nn.Linear``, on the same device and dtype), so
``timm.models.reparameterize_model`` or a model's own ``fuse()`` can swap it in place of the pair. The fused layer
uses the running statistics: it equals the pair in eval mode only.

State-dict keys are ``conv.*``/``bn.*`` and ``bn.*``/``linear.*`` (as timm's EfficientViT-MSRA and LeViT-style
models name them).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

__all__ = ["ConvNorm", "NormLinear"]


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """(s, t) with bn(x) == s * x + t per channel, from the running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class ConvNorm(nn.Module):
    """``nn.Conv2d`` without bias followed by ``nn.BatchNorm2d``.

    Args:
        in_chs, out_chs: channels in and out.
        kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        bn_weight_init: initial BatchNorm gamma (0 makes a residual branch start as the identity).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One biased ``nn.Conv2d`` equal to this pair in eval mode."""
        conv = self.conv
        scale, shift = _bn_scale_shift(self.bn)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(shift)
        return fused


class NormLinear(nn.Module):
    """``nn.BatchNorm1d`` -> dropout -> ``nn.Linear`` (a classifier head on pooled features).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        std: std of the truncated-normal weight init.
        drop: dropout rate before the linear layer (training only; dropped by ``fuse()``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        std: float = 0.02,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn = nn.BatchNorm1d(in_features, **dd)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features, bias=bias, **dd)
        trunc_normal_(self.linear.weight, std=std)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.drop(self.bn(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """One ``nn.Linear`` equal to this head in eval mode."""
        linear = self.linear
        scale, shift = _bn_scale_shift(self.bn)
        fused = nn.Linear(
            linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype
        )
        fused.weight.copy_(linear.weight * scale[None, :])
        bias = linear.weight @ shift
        if linear.bias is not None:
            bias = bias + linear.bias
        fused.bias.copy_(bias)
        return fused
