"""FocalNet: Focal Modulation Networks (Yang et al., NeurIPS 2022, arXiv:2203.11926).

A four-stage hierarchical backbone in which every block replaces self-attention with focal modulation
(:class:`backbones.blocks.FocalModulation`): a query is multiplied by a gated sum of depthwise-convolution
contexts of growing receptive field plus one global context. Stages are Swin-like (4x stem, 2x downsample at
the start of each later stage, channels doubling); large models use overlapping downsample convs, post-norm
blocks and LayerScale; huge also normalises inside the modulation.

Drop-in for timm's ``FocalNet`` (same names, pretrained tags, state-dict keys and outputs at sizes divisible by
32), with three differences:

* any input size: every patch-embed / downsample conv pads its input right/bottom to a multiple of its stride
  (as the official detection backbone does), so an H x W input gives ceil(H / 4) x ceil(W / 4), ... maps where
  timm's non-overlapping convs drop the last rows/columns;
* a clear error for input of the wrong channel count or smaller than the total stride;
* :func:`checkpoint_filter_fn` also converts the official microsoft/FocalNet layout and adapts focal kernels to
  the model (zero-padding them centred, or cropping) and focal levels (re-arranging the ``f`` gate rows), the
  way the official detection/segmentation loaders do for models built with ``focal_windows=9``.

The network runs internally in channels-last memory format (faster on CPU and GPU for 1x1 and depthwise convs);
outputs are ordinary NCHW-shaped tensors that may carry channels-last strides.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ClassifierHead,
    DropPath,
    LayerNorm2d,
    LayerScale2d,
    NormMlpClassifierHead,
    trunc_normal_,
)
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from .._registry import register_model
from ..blocks import FocalModulation
from ..blocks._windows import pad_to_multiple
from ._common import StagedModelMixin, check_input, per_stage
from ._focalnet_checkpoint import checkpoint_filter_fn
from ._stage import Stage, stage_drop_path_rates, stage_feature_info

__all__ = [
    "FocalNet",
    "checkpoint_filter_fn",
    "focalnet_tiny_srf",
    "focalnet_small_srf",
    "focalnet_base_srf",
    "focalnet_tiny_lrf",
    "focalnet_small_lrf",
    "focalnet_base_lrf",
    "focalnet_large_fl3",
    "focalnet_large_fl4",
    "focalnet_xlarge_fl3",
    "focalnet_xlarge_fl4",
    "focalnet_huge_fl3",
    "focalnet_huge_fl4",
]

_layer_norm_2d = partial(LayerNorm2d, eps=1e-5)  # FocalNet's LayerNorm eps (timm's LayerNorm2d default is 1e-6)


class Downsample(nn.Module):
    """Strided conv then LayerNorm over the output channels (the stem and each stage's downsample).

    The input is zero-padded right/bottom to a multiple of the stride first, so the output is ceil(H / stride).
    At multiples of the stride the padding is empty and the result is timm's exactly.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 4,
        overlap: bool = False,
        norm_layer: type[nn.Module] | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.stride = stride
        if overlap:
            # Classification layout (timm, official classification): k7 p2 stem, k3 p1 downsample.
            # The official detection stem uses k7 p3 instead; weights are shared but features shift slightly.
            kernel_size, padding = {4: (7, 2), 2: (3, 1)}[stride]
        else:
            kernel_size, padding = stride, 0
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size=kernel_size, stride=stride, padding=padding, **dd)
        self.norm = norm_layer(out_chs, **dd) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x)

    def downsample(self, x: Tensor) -> Tensor:
        x = self.proj(pad_to_multiple(x, self.stride, channels_last=False))
        return self.norm(x)


class _Stem(Downsample):
    """The first :class:`Downsample`; it also validates the image and moves it to channels-last memory."""

    def __init__(self, in_chs: int, out_chs: int, min_input_size: int, **kwargs: Any):
        super().__init__(in_chs, out_chs, stride=4, **kwargs)
        self.in_chs = in_chs
        self.min_input_size = min_input_size

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chs, self.min_input_size, "FocalNet")
        return self.downsample(x.contiguous(memory_format=torch.channels_last))  # (no super() in TorchScript)


class _ConvMlp(nn.Module):
    """timm's ``Mlp(use_conv=True)`` (same keys ``fc1``, ``fc2``), but GELU runs in place when autograd is off."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1, **dd)
        self.act = act_layer()
        # plain attributes, not isinstance tests in forward: TorchScript
        self.gelu_approximate = self.act.approximate if isinstance(self.act, nn.GELU) else None
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden_dim, dim, kernel_size=1, **dd)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        approximate = self.gelu_approximate
        if approximate is not None and not torch.is_grad_enabled():
            x = torch.ops.aten.gelu_(x, approximate=approximate)
        else:
            x = self.act(x)
        return self.drop2(self.fc2(self.drop1(x)))


class FocalNetBlock(nn.Module):
    """Focal modulation and MLP residual branches, pre-norm (T/S/B) or post-norm with LayerScale (L/XL/H).

    Pre-norm:  x + ls(mod(norm1(x))),      then x + ls(mlp(norm2(x))).
    Post-norm: x + ls(norm1_post(mod(x))), then x + ls(norm2_post(mlp(x))).
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        focal_levels: int = 2,
        focal_window: int = 3,
        focal_factor: int = 2,
        use_post_norm: bool = False,
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        layerscale_value: float | None = None,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = LayerNorm2d,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.use_post_norm = use_post_norm
        pre_norm = (lambda: nn.Identity()) if use_post_norm else (lambda: norm_layer(dim, **dd))
        post_norm = (lambda: norm_layer(dim, **dd)) if use_post_norm else (lambda: nn.Identity())
        layer_scale = (
            (lambda: LayerScale2d(dim, layerscale_value, **dd)) if layerscale_value is not None else nn.Identity
        )

        self.norm1 = pre_norm()
        self.modulation = FocalModulation(
            dim,
            focal_levels=focal_levels,
            focal_window=focal_window,
            focal_factor=focal_factor,
            use_post_norm=use_post_norm_in_modulation,
            normalize_modulator=normalize_modulator,
            proj_drop=proj_drop,
            norm_layer=norm_layer,
            **dd,
        )
        self.norm1_post = post_norm()
        self.ls1 = layer_scale()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

        self.norm2 = pre_norm()
        self.mlp = _ConvMlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.norm2_post = post_norm()
        self.ls2 = layer_scale()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # Each branch ends in a fresh tensor that no backward needs, so the residual is added into it in place.
        x = self.drop_path1(self.ls1(self.norm1_post(self.modulation(self.norm1(x))))).add_(x)
        x = self.drop_path2(self.ls2(self.norm2_post(self.mlp(self.norm2(x))))).add_(x)
        return x


class FocalNet(StagedModelMixin, nn.Module):
    """Focal Modulation Network (timm-compatible; see the module docstring for what differs).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        embed_dim: channels of stage 0; stage i has ``embed_dim * 2**i``.
        depths: blocks per stage.
        mlp_ratio: MLP hidden channels / channels.
        focal_levels: depthwise context levels per stage (int or one per stage).
        focal_windows: first-level kernel size per stage (int or one per stage); the official detection models
            use 9 (kernels 9, 11, ...) with classification weights zero-padded by :func:`checkpoint_filter_fn`.
        focal_factor: kernel growth per level.
        use_overlap_down: overlapping stem (k7) and downsample (k3) convs (large/xlarge/huge).
        use_post_norm: post-norm blocks (large/xlarge/huge).
        use_post_norm_in_modulation: LayerNorm inside the modulation (huge).
        normalize_modulator: divide the aggregated context by (levels + 1).
        head_hidden_size: if set, a norm + MLP pre-logits head instead of a final norm and a linear classifier.
        head_init_scale: scale of the classifier's initial weights.
        layerscale_value: LayerScale init (None: no LayerScale).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after the modulation and MLP projections.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm_layer: norm over channels of an NCHW map.
    """

    _family = "FocalNet"
    _stages_attr = "layers"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mlp_ratio: float = 4.0,
        focal_levels: int | Sequence[int] = 2,
        focal_windows: int | Sequence[int] = 3,
        focal_factor: int = 2,
        use_overlap_down: bool = False,
        use_post_norm: bool = False,
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        head_hidden_size: int | None = None,
        head_init_scale: float = 1.0,
        layerscale_value: float | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: type[nn.Module] = _layer_norm_2d,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        focal_levels = per_stage(focal_levels, num_stages, "focal_levels", "FocalNet")
        focal_windows = per_stage(focal_windows, num_stages, "focal_windows", "FocalNet")
        dims = [embed_dim * 2**i for i in range(num_stages)]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dim = dims
        self.num_features = dims[-1]
        self.grad_checkpointing = False

        total_stride = 4 * 2 ** (num_stages - 1)
        self.stem = _Stem(in_chans, dims[0], total_stride, overlap=use_overlap_down, norm_layer=norm_layer, **dd)
        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        stages = []
        for i in range(num_stages):
            block_kwargs = dict(
                mlp_ratio=mlp_ratio,
                focal_levels=focal_levels[i],
                focal_window=focal_windows[i],
                focal_factor=focal_factor,
                use_post_norm=use_post_norm,
                use_post_norm_in_modulation=use_post_norm_in_modulation,
                normalize_modulator=normalize_modulator,
                layerscale_value=layerscale_value,
                proj_drop=proj_drop_rate,
            )
            # the downsample starts the stage, as in timm (the official code ends the previous stage with it)
            downsample = (
                Downsample(dims[i - 1], dims[i], stride=2, overlap=use_overlap_down, norm_layer=norm_layer, **dd)
                if i > 0
                else None
            )
            blocks = [
                FocalNetBlock(dims[i], drop_path=dp, norm_layer=norm_layer, **block_kwargs, **dd)
                for dp in drop_paths[i]
            ]
            stages.append(Stage(downsample, blocks))
        self.feature_info = stage_feature_info(dims, prefix="layers")
        self.layers = nn.Sequential(*stages)

        if head_hidden_size:
            self.norm = nn.Identity()
            self.head = NormMlpClassifierHead(
                self.num_features,
                num_classes,
                hidden_size=head_hidden_size,
                pool_type=global_pool,
                drop_rate=drop_rate,
                norm_layer=norm_layer,
                **dd,
            )
        else:
            self.norm = norm_layer(self.num_features, **dd)
            self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features

        for name, module in self.named_modules():
            _init_weights(module, name, head_init_scale)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        if coarse:
            blocks = [(r"^layers\.(\d+)", None), (r"^norm", (99999,))]
        else:
            blocks = [
                (r"^layers\.(\d+).downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ]
        return dict(stem=r"^stem", blocks=blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layers(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module, name: str, head_init_scale: float = 1.0) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Linear) and name == "head.fc":
            module.weight.data.mul_(head_init_scale)
            module.bias.data.mul_(head_init_scale)


def _create_focalnet(variant: str, pretrained: bool = False, **kwargs: Any) -> FocalNet:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_model_with_cfg(
        FocalNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.proj",
        "classifier": "head.fc",
        "license": "mit",
        **kwargs,
    }


_in22k_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, num_classes=21842)

# timm's hub copies are tried first; the official release files (microsoft/FocalNet README: GitHub release v1.0.0,
# the huge models only on the retired Azure blob) are the fallback, read by checkpoint_filter_fn.
_GH = "https://github.com/microsoft/FocalNet/releases/download/v1.0.0/"
_AZURE = "https://projects4jw.blob.core.windows.net/focalnet/release/classification/"
default_cfgs = generate_default_cfgs(
    {
        "focalnet_tiny_srf.ms_in1k": _cfg(url=_GH + "focalnet_tiny_srf.pth", hf_hub_id="timm/"),
        "focalnet_small_srf.ms_in1k": _cfg(url=_GH + "focalnet_small_srf.pth", hf_hub_id="timm/"),
        "focalnet_base_srf.ms_in1k": _cfg(url=_GH + "focalnet_base_srf.pth", hf_hub_id="timm/"),
        "focalnet_tiny_lrf.ms_in1k": _cfg(url=_GH + "focalnet_tiny_lrf.pth", hf_hub_id="timm/"),
        "focalnet_small_lrf.ms_in1k": _cfg(url=_GH + "focalnet_small_lrf.pth", hf_hub_id="timm/"),
        "focalnet_base_lrf.ms_in1k": _cfg(url=_GH + "focalnet_base_lrf.pth", hf_hub_id="timm/"),
        # 22k heads use the official "reordered" label map (IN-1k classes first); huge_fl4 ships without a head.
        "focalnet_large_fl3.ms_in22k": _cfg(url=_GH + "focalnet_large_lrf_384.pth", hf_hub_id="timm/", **_in22k_384),
        "focalnet_large_fl4.ms_in22k": _cfg(
            url=_GH + "focalnet_large_lrf_384_fl4.pth", hf_hub_id="timm/", **_in22k_384
        ),
        "focalnet_xlarge_fl3.ms_in22k": _cfg(
            url=_GH + "focalnet_xlarge_lrf_384.pth", hf_hub_id="timm/", **_in22k_384
        ),
        "focalnet_xlarge_fl4.ms_in22k": _cfg(
            url=_GH + "focalnet_xlarge_lrf_384_fl4.pth", hf_hub_id="timm/", **_in22k_384
        ),
        "focalnet_huge_fl3.ms_in22k": _cfg(
            url=_AZURE + "focalnet_huge_lrf_224.pth", hf_hub_id="timm/", num_classes=21842
        ),
        "focalnet_huge_fl4.ms_in22k": _cfg(
            url=_AZURE + "focalnet_huge_lrf_224_fl4.pth", hf_hub_id="timm/", num_classes=0
        ),
    }
)

# normalize_modulator stays False for every name, as in timm and the official model entrypoints, although the
# official configs/focalnet_large_fl4.yaml sets NORMALIZE_MODULATOR: True (an upstream inconsistency; which setting
# the released large_fl4 weights were trained with is not verified). Pass normalize_modulator=True to change it.
_large = dict(depths=(2, 2, 18, 2), use_post_norm=True, use_overlap_down=True, layerscale_value=1e-4)


@register_model
def focalnet_tiny_srf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 6, 2), embed_dim=96, focal_levels=2)
    return _create_focalnet("focalnet_tiny_srf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_small_srf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 18, 2), embed_dim=96, focal_levels=2)
    return _create_focalnet("focalnet_small_srf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_base_srf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 18, 2), embed_dim=128, focal_levels=2)
    return _create_focalnet("focalnet_base_srf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_tiny_lrf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 6, 2), embed_dim=96, focal_levels=3)
    return _create_focalnet("focalnet_tiny_lrf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_small_lrf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 18, 2), embed_dim=96, focal_levels=3)
    return _create_focalnet("focalnet_small_lrf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_base_lrf(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(depths=(2, 2, 18, 2), embed_dim=128, focal_levels=3)
    return _create_focalnet("focalnet_base_lrf", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_large_fl3(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=192, focal_levels=3, focal_windows=5)
    return _create_focalnet("focalnet_large_fl3", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_large_fl4(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=192, focal_levels=4, focal_windows=3)
    return _create_focalnet("focalnet_large_fl4", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_xlarge_fl3(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=256, focal_levels=3, focal_windows=5)
    return _create_focalnet("focalnet_xlarge_fl3", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_xlarge_fl4(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=256, focal_levels=4, focal_windows=3)
    return _create_focalnet("focalnet_xlarge_fl4", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_huge_fl3(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=352, focal_levels=3, focal_windows=3, use_post_norm_in_modulation=True)
    return _create_focalnet("focalnet_huge_fl3", pretrained, **dict(model_args, **kwargs))


@register_model
def focalnet_huge_fl4(pretrained: bool = False, **kwargs: Any) -> FocalNet:
    model_args = dict(_large, embed_dim=352, focal_levels=4, focal_windows=3, use_post_norm_in_modulation=True)
    return _create_focalnet("focalnet_huge_fl4", pretrained, **dict(model_args, **kwargs))
