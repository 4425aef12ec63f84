"""HaloNet's layers: the ResNet bottleneck, the halo-attention bottleneck and the stride-4 stem (timm's key names)."""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import BatchNormAct2d, ConvNormAct, DropPath, get_attn, make_divisible
from torch import Tensor, nn

from ..blocks.halo_attention import HaloAttention
from ._common import check_input

__all__ = ["TOTAL_STRIDE", "Bottleneck", "HaloBlock", "HaloNetStem"]

TOTAL_STRIDE = 32


def _shortcut(in_chs: int, out_chs: int, stride: int, conv: Any) -> nn.Module:
    """Identity, or a strided 1x1 conv + BN (no activation) where the shape changes."""
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    return conv(in_chs, out_chs, 1, stride=stride, apply_act=False)


class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> kxk (strided, grouped) -> channel attention (SE/ECA) -> 1x1, residual, activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 0.25,
        group_size: int | None = None,
        attn_layer: str | None = None,
        act_layer: Any = nn.ReLU,
        drop_block: Any = None,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        conv = partial(ConvNormAct, act_layer=act_layer, **dd)
        mid = make_divisible(out_chs * bottle_ratio)
        self.shortcut = _shortcut(in_chs, out_chs, stride, conv)
        self.conv1_1x1 = conv(in_chs, mid, 1)
        if group_size and mid % group_size:
            raise ValueError(f"HaloNet: bottleneck width {mid} is not a multiple of group_size={group_size}")
        groups = mid // group_size if group_size else 1
        self.conv2_kxk = conv(mid, mid, 3, stride=stride, groups=groups, drop_layer=drop_block)
        self.attn = get_attn(attn_layer)(mid, **dd) if attn_layer else nn.Identity()
        self.conv3_1x1 = conv(mid, out_chs, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = act_layer(inplace=True)

    def init_weights(self, zero_init_last: bool = True) -> None:
        if zero_init_last:
            nn.init.zeros_(self.conv3_1x1.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.shortcut(x)
        x = self.conv3_1x1(self.attn(self.conv2_kxk(self.conv1_1x1(x))))
        return self.act(self.drop_path(x) + shortcut)


class HaloBlock(nn.Module):
    """Bottleneck whose kxk conv is halo attention: 1x1 -> HaloAttention (strided) -> BN + act -> 1x1, residual.

    The attention reads ``mid`` channels and returns ``value_ratio * mid`` (the paper's r_v); queries/keys have
    ``dim_head * num_heads`` channels, or ``make_divisible(mid * qk_ratio, 8)``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 0.25,
        num_heads: int = 8,
        block_size: int = 8,
        halo_size: int = 3,
        dim_head: int | None = None,
        qk_ratio: float = 1.0,
        value_ratio: float = 1.0,
        mask_padding: bool = False,
        act_layer: Any = nn.ReLU,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        conv = partial(ConvNormAct, act_layer=act_layer, **dd)
        mid = make_divisible(out_chs * bottle_ratio)
        dim_qk = dim_head * num_heads if dim_head else make_divisible(mid * qk_ratio, divisor=8)
        dim_v = int(round(mid * value_ratio))
        self.shortcut = _shortcut(in_chs, out_chs, stride, conv)
        self.conv1_1x1 = conv(in_chs, mid, 1)
        self.self_attn = HaloAttention(
            mid,
            dim_v,
            stride=stride,
            num_heads=num_heads,
            dim_head=dim_qk // num_heads,
            block_size=block_size,
            halo_size=halo_size,
            mask_padding=mask_padding,
            **dd,
        )
        self.post_attn = BatchNormAct2d(dim_v, act_layer=act_layer, **dd)
        self.conv3_1x1 = conv(dim_v, out_chs, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act = act_layer(inplace=True)

    def init_weights(self, zero_init_last: bool = True) -> None:
        if zero_init_last:
            nn.init.zeros_(self.conv3_1x1.bn.weight)
        self.self_attn.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.shortcut(x)
        x = self.conv3_1x1(self.post_attn(self.self_attn(self.conv1_1x1(x))))
        return self.act(self.drop_path(x) + shortcut)


class HaloNetStem(nn.Sequential):
    """Stride-4 stem: a 7x7 conv + max pool, or timm's 'tiered' three 3x3 convs (+ max pool, or a strided 3rd conv).

    ``tap`` is the index of the module whose output is the stride-2 feature.
    """

    def __init__(self, in_chans: int, out_chs: int, stem_type: str, pool: bool, conv: Any):
        super().__init__()
        self.in_chans = in_chans
        self.min_input_size = TOTAL_STRIDE  # an attribute: TorchScript reads no module-level ints
        if stem_type == "7x7":
            if not pool:
                raise ValueError("HaloNet: the 7x7 stem needs stem_pool=True (the network's stride is 32)")
            self.conv1 = conv(in_chans, out_chs, 7, stride=2)
        elif stem_type == "tiered":
            self.conv1 = conv(in_chans, 3 * out_chs // 8, 3, stride=2)
            self.conv2 = conv(3 * out_chs // 8, out_chs // 2, 3)
            self.conv3 = conv(out_chs // 2, out_chs, 3, stride=1 if pool else 2)
        else:
            raise ValueError(f"HaloNet: stem_type must be '7x7' or 'tiered', got {stem_type!r}")
        if pool:
            self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.tap = len(self) - 2  # the conv before the pool, or before the strided 3rd conv
        self.tap_name = list(self._modules)[self.tap]
        self.tap_chs = self[self.tap].conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "HaloNet")
        for module in self:  # (no super() in TorchScript)
            x = module(x)
        return x

    def forward_with_tap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = check_input(x, self.in_chans, TOTAL_STRIDE, "HaloNet")
        for i, module in enumerate(self):
            x = module(x)
            if i == self.tap:
                tap = x
        return x, tap
