"""``EfficientViTFPN``: an FPN that also grows finer levels with transposed convolutions.

EfficientViT-MSRA's stages sit at strides 16, 32 and 64, but RetinaNet wants a stride-8 level and Mask R-CNN
stride 4 and 8. The official downstream code (microsoft/Cream, ``EfficientViT/downstream/efficientvit_fpn.py``)
keeps mmdet's FPN over the backbone levels and adds ``num_extra_trans_convs`` finer levels: each is a 2x2,
stride-2 transposed convolution of the previous finer lateral, starting from the finest lateral after the
top-down merge, followed by its own 3x3 output conv. No 1x1 lateral is needed for these levels. Coarser extra
levels (RetinaNet's P7) come from mmdet's usual ``add_extra_convs`` on top.

    laterals:        L_i = lateral_i(C_i) + up(L_{i+1})             (mmdet FPN, i = backbone levels)
    finer levels:    T_1 = deconv_1(L_0),  T_t = deconv_t(T_{t-1})  (strides s_0 / 2, s_0 / 4, ...)
    outputs:         (fine levels, finest first) + FPN outputs + extra coarse levels

``num_outs`` counts every output: RetinaNet on M4 uses 5 = 1 transposed (s8) + 3 backbone (s16..64) + 1 conv
(s128); Mask R-CNN 5 = 2 transposed (s4, s8) + 3 backbone. A transposed level is exactly twice its source's
size (a map of ceil(H/16) gives 2 * ceil(H/16), one more than ceil(H/8) for some H; detection heads take any
size). Keys match the official neck (``extra_trans_convs.{t}.conv``, ``extra_fpn_convs.{t}.conv``).

Registered in mmdet's MODELS (and mmseg's, when installed, for semantic-FPN configs).
"""

from __future__ import annotations

import importlib

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn

__all__ = ["EfficientViTFPN"]


class EfficientViTFPN(BaseModule):
    """mmdet's FPN plus ``num_extra_trans_convs`` finer levels from 2x2 stride-2 transposed convolutions.

    Written on mmengine/mmcv only (not as a subclass of mmdet's ``FPN``) so that importing ``backbones.mm``
    does not import mmdet's whole model zoo; arguments and behaviour of the FPN part are mmdet's.

    Args:
        in_channels: channels of the backbone maps, finest first.
        out_channels: channels of every output.
        num_outs: number of outputs, the transposed-conv levels included.
        num_extra_trans_convs: finer levels to add below the first used backbone level.
        start_level, end_level: first and last (inclusive; -1 = last) backbone map used.
        add_extra_convs: False (coarse extra levels by max-pool), True / 'on_input' / 'on_lateral' /
            'on_output' (3x3 stride-2 convs on that source), as in mmdet.
        relu_before_extra_convs, no_norm_on_lateral, conv_cfg, norm_cfg, act_cfg, upsample_cfg: as mmdet's FPN.
        init_cfg: defaults to Xavier-uniform on the Conv2d layers (the transposed convs keep ConvModule's init).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_outs: int,
        num_extra_trans_convs: int = 0,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: bool | str = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        act_cfg: dict | None = None,
        upsample_cfg: dict | None = None,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        if init_cfg is None:
            init_cfg = dict(type="Xavier", layer="Conv2d", distribution="uniform")
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        num_ins = len(in_channels)
        end = num_ins - 1 if end_level == -1 else end_level
        if not 0 <= start_level <= end < num_ins:
            raise ValueError(
                f"EfficientViTFPN: need 0 <= start_level <= end_level < {num_ins}, "
                f"got start_level={start_level}, end_level={end_level}"
            )
        used = end - start_level + 1
        if not 0 <= num_extra_trans_convs <= num_outs - used:
            raise ValueError(
                f"EfficientViTFPN: num_extra_trans_convs must be in [0, num_outs - used levels = {num_outs - used}]; "
                f"got {num_extra_trans_convs} with num_outs={num_outs}"
            )
        coarse = num_outs - used - num_extra_trans_convs
        if coarse and end != num_ins - 1:
            raise ValueError("EfficientViTFPN: extra coarse levels need end_level=-1 (the last backbone map)")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs not in (False, "on_input", "on_lateral", "on_output"):
            raise ValueError(
                f"EfficientViTFPN: add_extra_convs must be a bool or 'on_input' / 'on_lateral' / "
                f"'on_output', got {add_extra_convs!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.num_extra_trans_convs = num_extra_trans_convs
        self.start_level = start_level
        self.backbone_end_level = end + 1
        self.num_coarse = coarse
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg) if upsample_cfg is not None else dict(mode="nearest")
        lateral_norm = None if no_norm_on_lateral else norm_cfg

        def conv(cin: int, kernel: int, stride: int = 1, norm: dict | None = norm_cfg, **kw) -> ConvModule:
            return ConvModule(
                cin,
                out_channels,
                kernel,
                stride=stride,
                padding=kernel // 2 if kernel != 2 else 0,
                conv_cfg=kw.get("conv_cfg", conv_cfg),
                norm_cfg=norm,
                act_cfg=act_cfg,
                inplace=False,
            )

        self.lateral_convs = nn.ModuleList(conv(c, 1, norm=lateral_norm) for c in in_channels[start_level : end + 1])
        self.fpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in range(used))
        if add_extra_convs:
            for i in range(coarse):
                cin = in_channels[end] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(conv(cin, 3, stride=2))
        self.extra_trans_convs = nn.ModuleList(
            conv(out_channels, 2, stride=2, norm=lateral_norm, conv_cfg=dict(type="deconv"))
            for _ in range(num_extra_trans_convs)
        )
        self.extra_fpn_convs = nn.ModuleList(conv(out_channels, 3) for _ in range(num_extra_trans_convs))

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f"EfficientViTFPN: expected {len(self.in_channels)} input maps with channels {self.in_channels}, "
                f"got {len(inputs)}"
            )
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up

        # finer levels, grown from the finest merged lateral; kept finest first
        fine = []
        prev = laterals[0]
        for deconv in self.extra_trans_convs:
            prev = deconv(prev)
            fine.insert(0, prev)
        # official quirk kept for weight compatibility: output conv t acts on the t-th finest level
        outs = [conv(f) for conv, f in zip(self.extra_fpn_convs, fine)]

        outs += [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        if self.num_coarse and not self.add_extra_convs:
            for _ in range(self.num_coarse):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_coarse:
            source = {
                "on_input": inputs[self.backbone_end_level - 1],
                "on_lateral": laterals[-1],
                "on_output": outs[-1],
            }[self.add_extra_convs]
            for i in range(len(laterals), len(laterals) + self.num_coarse):
                if i > len(laterals) and self.relu_before_extra_convs:
                    source = F.relu(source)
                source = self.fpn_convs[i](source)
                outs.append(source)
        return tuple(outs)


def _register() -> None:
    for scope in ("mmdet", "mmseg"):
        try:
            registry = importlib.import_module(f"{scope}.registry").MODELS
        except ImportError:
            continue
        if registry.module_dict.get(EfficientViTFPN.__name__) is not EfficientViTFPN:
            registry.register_module(module=EfficientViTFPN)


_register()
