"""Deformable token merging (LIT, AAAI 2022, arXiv:2105.14217; used between the stages of LITv2).

A 2 x 2 / stride 2 patch-merging convolution whose sampling points are learned: a plain conv of the same
kernel and stride predicts, for every output position p and kernel tap k, an offset (dy, dx), and the
deformable convolution (DCNv1, one offset group, no modulation) reads the input bilinearly at p_k + (dy, dx):

    offset = conv_offset(x)                                  (B, 2 * K, H', W'), channels [dy_0, dx_0, dy_1, ...]
    y[o, p] = b[o] + sum_k sum_c W[o, c, k] * bilinear(x[c], s * p + r_k + offset_k(p))
    out = GELU(BatchNorm(y))                                  C -> 2C channels, H x W -> H/2 x W/2

r_k are the kernel taps (row-major), bilinear() is 0 outside the map and weights each of the 4 neighbours that
lie inside. ``conv_offset`` starts at zero, so at initialisation the merging is the plain strided conv.

The op is ``torchvision.ops.deform_conv2d`` (same offset layout as the official compiled DCN and mmcv). It runs in
fp32 (under autocast, or for half/bfloat16 input, the input is cast up and the output back), as the official code
keeps its DCN out of mixed precision; torchvision has no bfloat16 CPU kernel.

Any H and W: the map is zero-padded bottom/right to a multiple of the stride, so the output is
ceil(H / 2) x ceil(W / 2) (the official detection backbone drops the odd last row/column instead; at even sizes
both agree). Shapes: input (B, H, W, C) channels-last, output (B, ceil(H/2), ceil(W/2), C_out) channels-last.
State-dict keys: ``conv.weight``, ``conv.bias``, ``conv.conv_offset.{weight,bias}``, ``norm.*`` (official:
``dconv.*`` and ``norm_layer.*``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from ._checks import check_shape
from ._windows import pad_to_multiple, to_2tuple_int

__all__ = ["DeformableConv2d", "DeformableTokenMerging"]


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of torchvision's deform_conv2d for ``torch.utils.flop_counter`` (2 per multiply-add, as for a conv;
    the bilinear sampling is not counted)."""
    b, c_out, h, w = out_shape
    return 2 * b * c_out * h * w * weight_shape[1] * weight_shape[2] * weight_shape[3]


try:  # so that FlopCounterMode (tools/model_table.py, tools/benchmark.py) counts the deformable convs
    from torch.utils.flop_counter import register_flop_formula

    register_flop_formula(torch.ops.torchvision.deform_conv2d)(_deform_conv2d_flops)
except (ImportError, AttributeError, RuntimeError):  # an older torch, or registered already
    pass


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # devices without autocast (e.g. meta, used for counting parameters and FLOPs)
        return False


@register_notrace_module  # reason: the fp32 island depends on the dtype and the autocast state of the input
class DeformableConv2d(nn.Module):
    """DCNv1 convolution that predicts its own offsets with a plain conv (``conv_offset``, zero-initialised).

    Args:
        in_channels / out_channels: channels of the NCHW input / output.
        kernel_size, stride, padding, dilation: as ``nn.Conv2d`` (the offset conv uses the same geometry).
        offset_groups: channel groups with their own offsets.
        bias: bias of the deformable conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        offset_groups: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if in_channels % offset_groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by offset_groups ({offset_groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = to_2tuple_int(kernel_size, "kernel_size")
        self.stride = to_2tuple_int(stride, "stride")
        self.dilation = to_2tuple_int(dilation, "dilation")
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.offset_groups = offset_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **dd))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        num_taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            in_channels,
            2 * offset_groups * num_taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            **dd,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default init for the deformable weights (as the official DCN), zero offsets
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        expected = f"DeformableConv2d: expected x of shape (B, {self.in_channels}, H, W)"
        x = check_shape(x, 4, self.in_channels, 1, expected)
        if torch.jit.is_scripting():  # TorchScript does not autocast
            return self._deform(x)
        if x.dtype in (torch.float16, torch.bfloat16) or _autocast_enabled(x.device.type):
            # fp32 island: no half/bfloat16 CPU kernel, and the official DCN was kept out of mixed precision too
            with torch.autocast(x.device.type, enabled=False):
                out = self._deform(x.float())
            return out.to(x.dtype) if x.dtype in (torch.float16, torch.bfloat16) else out
        return self._deform(x)

    def _deform(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.to(x.dtype), self.bias
        offset_weight, offset_bias = self.conv_offset.weight.to(x.dtype), self.conv_offset.bias
        if bias is not None:
            bias = bias.to(x.dtype)
        if offset_bias is not None:
            offset_bias = offset_bias.to(x.dtype)
        offset = F.conv2d(x, offset_weight, offset_bias, self.stride, self.padding, self.dilation)
        return deform_conv2d(
            x, offset, weight, bias, stride=self.stride, padding=self.padding, dilation=self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, offset_groups={self.offset_groups}"
        )


class DeformableTokenMerging(nn.Module):
    """Deformable k x k / stride k conv, then norm and activation, over a channels-last map (LITv2 ``DTM``).

    Args:
        dim: input channels C.
        out_dim: output channels (default 2C).
        stride: kernel size and stride of the merging (2 in LITv2).
        norm_layer: norm over the NCHW output (BatchNorm2d in LITv2).
        act_layer: activation after the norm.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        stride: int = 2,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.GELU,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        out_dim = out_dim or 2 * dim
        self.dim = dim
        self.stride = stride
        self.conv = DeformableConv2d(dim, out_dim, stride, stride=stride, **dd)
        self.norm = norm_layer(out_dim, **dd)
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(
            x, 4, self.dim, -1, f"DeformableTokenMerging: expected x of shape (B, H, W, {self.dim}) (channels-last)"
        )
        x = pad_to_multiple(x, self.stride).permute(0, 3, 1, 2)  # NCHW view, channels-last strides
        x = self.act(self.norm(self.conv(x)))
        return x.permute(0, 2, 3, 1)
