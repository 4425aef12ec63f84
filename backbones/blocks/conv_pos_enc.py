"""Convolutional position encoding (CPE; CvT / DaViT, arXiv:2204.03645).

A residual depthwise k x k convolution with "same" zero padding and bias:

    y = x + act(DWConv_k(x))          act = identity (DaViT) or GELU

It gives tokens their position (zero padding at the border tells the network where the border is) and costs
C * (k^2 + 1) parameters. With an identity activation the residual is folded into the kernel (1 added to the
centre tap), so the block is one convolution instead of a convolution and an addition over the whole map; the
parameters and their gradients are those of the unfolded form. Under autocast the sum is kept explicit, so the
residual stream stays in fp32 while the convolution runs in low precision.

Shapes: input and output (B, H, W, C), channels-last (the convolution runs on the channels-last memory format).
State-dict key ``proj`` (as timm's ``ConvPosEnc``).
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn

from ._checks import check_shape
from ._precision import autocast_on_for

__all__ = ["ConvPosEnc"]


@register_notrace_module  # reason: the residual fold depends on the autocast state of the input's device
class ConvPosEnc(nn.Module):
    """Residual depthwise convolution over a channels-last map.

    Args:
        dim: channels C.
        kernel_size: odd kernel side k.
        act: apply GELU to the convolution before the residual sum.
    """

    def __init__(self, dim: int, kernel_size: int = 3, act: bool = False, device=None, dtype=None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.dim = dim
        self.proj = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True, device=device, dtype=dtype
        )
        self.act = nn.GELU() if act else nn.Identity()
        self.fold_residual = not act  # x + conv(x) as one conv (see the module docstring)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"ConvPosEnc: expected x of shape (B, H, W, {self.dim})")
        x_nchw = x.permute(0, 3, 1, 2)  # a view: channels-last memory format
        if self.fold_residual and not autocast_on_for(x):
            k = self.proj.kernel_size[0] // 2
            weight = self.proj.weight.clone()
            weight[:, :, k, k] += 1.0  # x + conv(x; w) == conv(x; w + centre one-hot)
            y = F.conv2d(x_nchw, weight, self.proj.bias, padding=self.proj.padding, groups=self.dim)
        else:
            y = x_nchw + self.act(self.proj(x_nchw))
        return y.permute(0, 2, 3, 1)
