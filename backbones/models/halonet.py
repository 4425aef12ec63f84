"""HaloNet: Scaling Local Self-Attention for Parameter Efficient Visual Backbones (Vaswani et al., CVPR 2021,
arXiv:2103.12731).

ResNet-style networks whose bottleneck blocks replace the 3x3 convolution by blocked local self-attention with a
halo (:class:`backbones.blocks.HaloAttention`): b x b query blocks attend to (b + 2h)^2 windows. Two kinds of model:

* timm's hybrids (halonet26t, sehalonet33ts, halonet50ts, eca_halonext26ts) with convolutional early stages and
  halo blocks in the later ones, and timm's ``halonet_h1`` (attention in every stage): drop-in replacements with
  timm's names, pretrained tags, state-dict keys (``stem.conv1.conv``, ``stages.N.M.conv1_1x1``, ``self_attn.kv``,
  ``final_conv``, ``head.fc``, ...) and outputs at the sizes timm accepts (multiples of 256 for b = 8);
* the paper's H0 ... H7 (``halonet_h0`` ... ``halonet_h7``, no published weights): every block is a halo block; stage
  i has base width d_i = 64 * 2^i for queries/keys, r_v * d_i for values, r_b * d_i output channels, and H3+ end in a
  1x1 conv to d_f channels. Heads, stem and activation follow timm's halonet_h1 (8 heads, ResNet 7x7 stem, ReLU);
  the parameter counts equal the paper's table (5.5M ... 67.4M).

What differs from timm: any input size (halo attention pads to a multiple of b and crops; H x W gives
ceil(H / r) x ceil(W / r) maps at reduction r, e.g. 224 x 224 or 800 x 1333), a clear error for wrong input, an
optional ``mask_padding=True`` that keeps padded keys out of the softmax (off by default: timm's numerics, which its
weights were trained with), and faster, lighter attention (one key/value gather, fused attention, attention
matrices recomputed in backward rather than stored).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ClassifierHead,
    ConvNormAct,
    DropBlock2d,
    calculate_drop_path_rates,
    get_act_layer,
)
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from .._registry import register_model
from ._common import ClassifierHeadMixin, drop_absent_classifier, per_stage
from ._halonet_layers import TOTAL_STRIDE, Bottleneck, HaloBlock, HaloNetStem

__all__ = [
    "HaloNet",
    "checkpoint_filter_fn",
    "halonet_h0",
    "halonet_h1",
    "halonet_h2",
    "halonet_h3",
    "halonet_h4",
    "halonet_h5",
    "halonet_h6",
    "halonet_h7",
    "halonet26t",
    "sehalonet33ts",
    "halonet50ts",
    "eca_halonext26ts",
]

class HaloNet(ClassifierHeadMixin, nn.Module):
    """HaloNet / halo-attention ResNet (timm-compatible key layout; see the module docstring).

    Args:
        layouts: blocks of each stage, 'B' a conv bottleneck and 'A' a halo-attention block, e.g. ``("BB", "BA")``.
        widths: output channels per stage.
        bottle_ratios: bottleneck width / output width, per stage or one for all.
        stem_type: '7x7' (conv + max pool) or 'tiered' (three 3x3 convs).
        stem_chs: stem output channels.
        stem_pool: max pool at the end of the stem (else the last tiered conv is strided).
        group_size: channels per group of the bottleneck 3x3 conv (None: dense).
        attn_layer: channel attention in bottleneck blocks ('se', 'eca' or None).
        num_features: channels of a final 1x1 conv + BN + act (0: none).
        num_heads: attention heads, per stage or one for all.
        block_size: query block side b.
        halo_size: halo h.
        dim_head: query/key channels per head (default from ``qk_ratio``).
        qk_ratio: query/key width relative to the block's bottleneck width.
        value_ratio: value width relative to the bottleneck width (the paper's r_v).
        mask_padding: keep padded keys out of the softmax (False: timm's numerics).
        act_layer: activation name.
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        drop_block_rate: DropBlock in the 3x3 convs of the last two stages.
        zero_init_last: zero-init the last BN of each residual branch.
    """

    def __init__(
        self,
        layouts: Sequence[str] = ("AAA", "AAA", "A" * 10, "AAA"),
        widths: Sequence[int] = (64, 128, 256, 512),
        bottle_ratios: float | Sequence[float] = 1.0,
        stem_type: str = "7x7",
        stem_chs: int = 64,
        stem_pool: bool = True,
        group_size: int | None = None,
        attn_layer: str | None = None,
        num_features: int = 0,
        num_heads: int | Sequence[int] = 8,
        block_size: int = 8,
        halo_size: int = 3,
        dim_head: int | None = None,
        qk_ratio: float = 1.0,
        value_ratio: float = 1.0,
        mask_padding: bool = False,
        act_layer: str = "relu",
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_block_rate: float = 0.0,
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(layouts)
        if num_stages != 4 or len(widths) != 4 or any(not s or set(s) - {"A", "B"} for s in layouts):
            raise ValueError(f"HaloNet: need 4 stage layouts of 'A'/'B' blocks and 4 widths, got {layouts}, {widths}")
        bottle_ratios = per_stage(bottle_ratios, num_stages, "bottle_ratios", "HaloNet")
        num_heads = per_stage(num_heads, num_stages, "num_heads", "HaloNet")
        act = get_act_layer(act_layer)
        conv = partial(ConvNormAct, act_layer=act, **dd)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = HaloNetStem(in_chans, stem_chs, stem_type, stem_pool, conv)
        self.feature_info = [dict(num_chs=self.stem.tap_chs, reduction=2, module=f"stem.{self.stem.tap_name}")]
        depths = [len(s) for s in layouts]
        drop_paths = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        drop_blocks = [None, None] + [
            partial(DropBlock2d, drop_prob=drop_block_rate, block_size=size, gamma_scale=gamma)
            if drop_block_rate
            else None
            for size, gamma in ((5, 0.25), (3, 1.0))
        ]
        in_chs, stages = stem_chs, []
        for i, layout in enumerate(layouts):
            blocks = []
            for j, kind in enumerate(layout):
                common = dict(
                    stride=2 if i > 0 and j == 0 else 1,
                    bottle_ratio=bottle_ratios[i],
                    act_layer=act,
                    drop_path=drop_paths[i][j],
                    **dd,
                )
                if kind == "A":
                    block = HaloBlock(
                        in_chs,
                        widths[i],
                        num_heads=num_heads[i],
                        block_size=block_size,
                        halo_size=halo_size,
                        dim_head=dim_head,
                        qk_ratio=qk_ratio,
                        value_ratio=value_ratio,
                        mask_padding=mask_padding,
                        **common,
                    )
                else:
                    block = Bottleneck(
                        in_chs,
                        widths[i],
                        group_size=group_size,
                        attn_layer=attn_layer,
                        drop_block=drop_blocks[i],
                        **common,
                    )
                blocks.append(block)
                in_chs = widths[i]
            stages.append(nn.Sequential(*blocks))
            if i < num_stages - 1:
                self.feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        if num_features:
            self.final_conv = conv(in_chs, num_features, 1)
            self.num_features = num_features
        else:
            self.final_conv = nn.Identity()
            self.num_features = in_chs
        self.feature_info.append(dict(num_chs=self.num_features, reduction=TOTAL_STRIDE, module="final_conv"))
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features
        self.global_pool = global_pool

        for module in self.modules():
            _init_weights(module)
        for module in self.modules():
            if isinstance(module, (Bottleneck, HaloBlock)):
                module.init_weights(zero_init_last)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        blocks = r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"
        return dict(stem=r"^stem", blocks=[(blocks, None), (r"^final_conv", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        super().reset_classifier(num_classes, global_pool, reset_other)
        if global_pool is not None:
            self.global_pool = global_pool

    def _run_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Features at strides 2 (stem), 4, 8, 16 and 32 (last stage + final conv), and the final features.

        Args:
            x: image batch (B, in_chans, H, W).
            indices: last n features if an int, all if None, else the feature indices to return.
            norm: accepted for API parity (the network has no final norm).
            stop_early: stop after the last requested feature.
            output_fmt: only 'NCHW'.
            intermediates_only: return only the list of features.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"HaloNet: output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        x, tap = self.stem.forward_with_tap(x)
        intermediates = [tap] if 0 in take_indices else []
        num_stages = len(self.stages)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index]
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i == num_stages - 1:
                x = self.final_conv(x)
            if i + 1 in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the layers after the last of ``indices`` (and the head where it no longer fits)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        truncated = max_index < len(self.feature_info) - 1
        self.stages = self.stages[:max_index]
        if max_index == 0:
            for name in list(self.stem._modules)[self.stem.tap + 1 :]:
                setattr(self.stem, name, nn.Identity())
        if truncated:
            self.final_conv = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or truncated:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for stage in self.stages:
                x = checkpoint_seq(stage, x)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """timm's ByobNet init: fan-out normal convs, N(0, 0.01) classifier, unit BN (blocks re-init their attention)."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: HaloNet) -> dict[str, Tensor]:
    """timm's layout is ours: pass it through; also accept timm ``features_only`` dicts (``stem_conv1.``,
    ``stages_0.``) and drop the classifier when the model has none."""
    out = {re.sub(r"^(stem|stages)_(\w+?)\.", r"\1.\2.", k): v for k, v in state_dict.items()}
    return drop_absent_classifier(out, model)


def _create_halonet(variant: str, pretrained: bool = False, **kwargs: Any) -> HaloNet:
    return build_model_with_cfg(
        HaloNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 256, 256),
        "pool_size": (8, 8),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv",
        "classifier": "head.fc",
        "license": "apache-2.0",
        **kwargs,
    }


_RELEASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-attn-weights/"

default_cfgs = generate_default_cfgs(
    {
        "halonet_h0.untrained": _cfg(),
        "halonet_h1.untrained": _cfg(),
        "halonet_h2.untrained": _cfg(),
        "halonet_h3.untrained": _cfg(input_size=(3, 320, 320), pool_size=(10, 10)),
        "halonet_h4.untrained": _cfg(input_size=(3, 384, 384), pool_size=(12, 12)),
        "halonet_h5.untrained": _cfg(input_size=(3, 448, 448), pool_size=(14, 14)),
        "halonet_h6.untrained": _cfg(input_size=(3, 512, 512), pool_size=(16, 16)),
        "halonet_h7.untrained": _cfg(input_size=(3, 600, 600), pool_size=(19, 19)),
        "halonet26t.a1h_in1k": _cfg(url=_RELEASE + "halonet26t_a1h_256-3083328c.pth", hf_hub_id="timm/"),
        "sehalonet33ts.ra2_in1k": _cfg(
            url=_RELEASE + "sehalonet33ts_256-87e053f9.pth", hf_hub_id="timm/", crop_pct=0.94
        ),
        "halonet50ts.a1h_in1k": _cfg(
            url=_RELEASE + "halonet50ts_a1h2_256-f3a3daee.pth", hf_hub_id="timm/", crop_pct=0.94
        ),
        "eca_halonext26ts.c1_in1k": _cfg(
            url=_RELEASE + "eca_halonext26ts_c_256-06906299.pth", hf_hub_id="timm/", crop_pct=0.94
        ),
    }
)


_H1 = dict(layouts=("AAA", "AAA", "A" * 10, "AAA"), widths=(64, 128, 256, 512), block_size=8, halo_size=3)
_TIERED = dict(stem_type="tiered", bottle_ratios=0.25, widths=(256, 512, 1024, 2048))


# The paper's H0 ... H7 (b, h, r_v, r_b, d_f, stage-3 depth from its table): widths r_b * (64, 128, 256, 512),
# bottleneck width (64, 128, 256, 512) = widths / r_b, values r_v times that.
@register_model
def halonet_h0(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(_H1, layouts=("AAA", "AAA", "A" * 7, "AAA"), widths=(32, 64, 128, 256), bottle_ratios=2.0)
    return _create_halonet("halonet_h0", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h1(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(_H1)
    return _create_halonet("halonet_h1", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h2(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(_H1, layouts=("AAA", "AAA", "A" * 11, "AAA"), widths=(80, 160, 320, 640), bottle_ratios=0.8)
    return _create_halonet("halonet_h2", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h3(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _H1,
        layouts=("AAA", "AAA", "A" * 12, "AAA"),
        widths=(96, 192, 384, 768),
        bottle_ratios=2 / 3,
        block_size=10,
        num_features=1024,
    )
    return _create_halonet("halonet_h3", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h4(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _H1,
        layouts=("AAA", "AAA", "A" * 12, "AAA"),
        widths=(192, 384, 768, 1536),
        bottle_ratios=1 / 3,
        block_size=12,
        halo_size=2,
        num_features=1280,
    )
    return _create_halonet("halonet_h4", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h5(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _H1,
        layouts=("AAA", "AAA", "A" * 23, "AAA"),
        widths=(128, 256, 512, 1024),
        bottle_ratios=0.5,
        value_ratio=2.5,
        block_size=14,
        halo_size=2,
        num_features=1536,
    )
    return _create_halonet("halonet_h5", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h6(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _H1,
        layouts=("AAA", "AAA", "A" * 24, "AAA"),
        widths=(176, 352, 704, 1408),
        bottle_ratios=4 / 11,
        value_ratio=3.0,
        block_size=8,
        halo_size=4,
        num_features=1536,
    )
    return _create_halonet("halonet_h6", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet_h7(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _H1,
        layouts=("AAA", "AAA", "A" * 26, "AAA"),
        widths=(224, 448, 896, 1792),
        bottle_ratios=2 / 7,
        value_ratio=4.0,
        block_size=10,
        halo_size=3,
        num_features=2048,
    )
    return _create_halonet("halonet_h7", pretrained, **dict(model_args, **kwargs))


# timm's hybrids: convolutional early stages, halo blocks later.
@register_model
def halonet26t(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(_TIERED, layouts=("BB", "BB", "BA", "AA"), block_size=8, halo_size=2)
    return _create_halonet("halonet26t", pretrained, **dict(model_args, **kwargs))


@register_model
def sehalonet33ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _TIERED,
        layouts=("BB", "BBA", "BBA", "AA"),
        widths=(256, 512, 1024, 1536),
        bottle_ratios=(0.25,) * 3 + (0.333,),
        stem_pool=False,
        attn_layer="se",
        act_layer="silu",
        num_features=1280,
        block_size=8,
        halo_size=3,
    )
    return _create_halonet("sehalonet33ts", pretrained, **dict(model_args, **kwargs))


@register_model
def halonet50ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _TIERED,
        layouts=("BBB", "BBBA", "BABABA", "BAB"),
        num_heads=(8, 4, 8, 8),
        act_layer="silu",
        block_size=8,
        halo_size=3,
    )
    return _create_halonet("halonet50ts", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_halonext26ts(pretrained: bool = False, **kwargs: Any) -> HaloNet:
    model_args = dict(
        _TIERED,
        layouts=("BB", "BB", "BA", "AA"),
        group_size=16,
        attn_layer="eca",
        act_layer="silu",
        block_size=8,
        halo_size=2,
        dim_head=16,
    )
    return _create_halonet("eca_halonext26ts", pretrained, **dict(model_args, **kwargs))
