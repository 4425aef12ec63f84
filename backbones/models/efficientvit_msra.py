"""EfficientViT (MSRA): memory-efficient vision transformer with cascaded group attention.

Paper: "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention", CVPR 2023,
https://arxiv.org/abs/2305.07027 (official code: github.com/microsoft/Cream, EfficientViT/). Not MIT's EfficientViT.

A 16x convolutional stem feeds three stages at strides 16, 32 and 64. Every block is a "sandwich": one
attention layer between two (depthwise conv, FFN) pairs, each with its own residual and only BatchNorm (no
LayerNorm), so that every linear layer folds into its neighbour for inference (:meth:`EfficientVitMsra.fuse`).
The attention is cascaded group attention in 7x7 windows (:mod:`backbones.blocks.cascaded_group_attention`).

Drop-in for timm's ``efficientvit_m0`` .. ``efficientvit_m5``: the same state-dict keys as timm's
``EfficientVitMsra`` and the same outputs. Like timm, the window of each stage is min(7, the stage's size at
``img_size``) (so 4 in the last stage at 224); ``set_input_size`` changes it, resizing the attention biases.
Any input size runs: windows pad and crop. Official Cream checkpoints load through :func:`checkpoint_filter_fn`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    DropPath,
    SelectAdaptivePool2d,
    SqueezeExcite,
    calculate_drop_path_rates,
    get_device_dtype,
    resize_rel_pos_bias_table_levit,
    to_2tuple,
)
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .._registry import register_model
from ..blocks.cascaded_group_attention import LocalWindowAttention
from ..blocks.conv_norm import ConvNorm, NormLinear
from ._common import check_input

__all__ = ["EfficientVitMsra"]

_STEM_STRIDE = 16


class Residual(nn.Module):
    """``x + drop_path(m(x))`` (key ``m``, as timm's ``ResidualDrop``)."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.m(x))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Fold the branch's BN; a depthwise "same" conv branch also absorbs the identity (one conv, no add)."""
        m = self.m.fuse() if isinstance(self.m, ConvNorm) else self.m
        if isinstance(m, nn.Conv2d) and _is_same_depthwise(m):
            k = m.kernel_size
            m.weight[:, 0, k[0] // 2, k[1] // 2] += 1.0
            return m
        self.m = m
        return self


def _is_same_depthwise(conv: nn.Conv2d) -> bool:
    k = conv.kernel_size
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and k[0] % 2 == 1
        and k[1] % 2 == 1
        and conv.padding == (k[0] // 2, k[1] // 2)
    )


class ConvNormMlp(nn.Module):
    """1x1 Conv-BN -> ReLU -> 1x1 Conv-BN (keys ``pw1``, ``pw2``)."""

    def __init__(self, dim: int, hidden_dim: int, last_bn_init: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.pw1 = ConvNorm(dim, hidden_dim, **dd)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden_dim, dim, bn_weight_init=last_bn_init, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(self.act(self.pw1(x)))


class PatchMerging(nn.Module):
    """Stride-2 inverted bottleneck: 1x1 (4x) -> ReLU -> 3x3 s2 depthwise -> ReLU -> SE -> 1x1 (no residual)."""

    def __init__(self, dim: int, out_dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        hidden_dim = 4 * dim
        self.conv1 = ConvNorm(dim, hidden_dim, **dd)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hidden_dim, hidden_dim, 3, stride=2, padding=1, groups=hidden_dim, **dd)
        self.se = SqueezeExcite(hidden_dim, 0.25, **dd)
        self.conv3 = ConvNorm(hidden_dim, out_dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def _dw_ffn(dim: int, dw_bn_init: float, ffn_bn_init: float, drop_path: float, dd: dict) -> nn.Sequential:
    """Residual 3x3 depthwise Conv-BN, then residual FFN (the pair that surrounds every token mixer)."""
    return nn.Sequential(
        Residual(ConvNorm(dim, dim, 3, padding=1, groups=dim, bn_weight_init=dw_bn_init, **dd), drop_path),
        Residual(ConvNormMlp(dim, 2 * dim, last_bn_init=ffn_bn_init, **dd), drop_path),
    )


class EfficientVitBlock(nn.Module):
    """dw0 -> ffn0 -> window attention -> dw1 -> ffn1, each a residual branch (keys as timm)."""

    def __init__(
        self,
        dim: int,
        key_dim: int = 16,
        num_heads: int = 4,
        window_size: int = 7,
        kernels: Sequence[int] = (5, 5, 5, 5),
        drop_path: float = 0.0,
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        last = 0.0 if zero_init_last else 1.0
        dw0, ffn0 = _dw_ffn(dim, last, last, drop_path, dd)
        self.dw0, self.ffn0 = dw0, ffn0
        attn = LocalWindowAttention(dim, key_dim, num_heads, window_size, kernels, proj_bn_init=last, **dd)
        self.mixer = Residual(attn, drop_path)
        dw1, ffn1 = _dw_ffn(dim, last, last, drop_path, dd)
        self.dw1, self.ffn1 = dw1, ffn1

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class EfficientVitStage(nn.Module):
    """Optional stride-2 downsample (res1 -> patchmerge -> res2) followed by ``depth`` blocks."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int,
        key_dim: int = 16,
        num_heads: int = 4,
        window_size: int = 7,
        kernels: Sequence[int] = (5, 5, 5, 5),
        downsample: bool = True,
        drop_path: Sequence[float] = (),
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if downsample:
            # The dw convs around the merge start at gamma 1, unlike those inside blocks (official init).
            ffn_init = 0.0 if zero_init_last else 1.0
            self.downsample = nn.Sequential(
                OrderedDict(
                    res1=_dw_ffn(in_dim, 1.0, ffn_init, 0.0, dd),
                    patchmerge=PatchMerging(in_dim, out_dim, **dd),
                    res2=_dw_ffn(out_dim, 1.0, ffn_init, 0.0, dd),
                )
            )
        else:
            if in_dim != out_dim:
                raise ValueError(f"a stage without downsample keeps its width: in_dim {in_dim} != out_dim {out_dim}")
            self.downsample = nn.Identity()
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(
            *(
                EfficientVitBlock(out_dim, key_dim, num_heads, window_size, kernels, drop_path[j], zero_init_last, **dd)
                for j in range(depth)
            )
        )

    def set_window_size(self, window_size: int) -> None:
        for block in self.blocks:
            block.mixer.m.set_window_size(window_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


def _stage_windows(img_size: int, window_size: Sequence[int]) -> list[int]:
    """Window side per stage: min(window, stage size at ``img_size``) with floor for the stem, ceil after."""
    size = img_size // _STEM_STRIDE
    out = []
    for i, ws in enumerate(window_size):
        if i > 0:
            size = (size - 1) // 2 + 1
        out.append(max(1, min(ws, size)))
    return out


class EfficientVitMsra(nn.Module):
    """EfficientViT-MSRA classifier / backbone.

    Args:
        img_size: input size the windows are sized for (min of H, W is used); any size runs.
        in_chans: input channels.
        num_classes: classes of the BN-Linear head (0: no head).
        embed_dim: channels per stage (stage 0's must be divisible by 8: the stem halves it three times).
        key_dim: q/k channels per head, per stage.
        depth: blocks per stage.
        num_heads: heads per stage (each embed_dim must be divisible by its heads).
        window_size: largest attention window side per stage.
        kernels: depthwise kernel size on q per head (shared by all stages).
        global_pool: pooling before the head ('avg', 'max', ... or '' for none with num_classes=0).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over blocks (the official models train without it).
        zero_init_last: start the last BN of every residual branch inside blocks at gamma 0 (official init).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 192),
        key_dim: Sequence[int] = (16, 16, 16),
        depth: Sequence[int] = (1, 2, 3),
        num_heads: Sequence[int] = (4, 4, 4),
        window_size: Sequence[int] = (7, 7, 7),
        kernels: Sequence[int] = (5, 5, 5, 5),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(embed_dim)
        for name, value in dict(key_dim=key_dim, depth=depth, num_heads=num_heads, window_size=window_size).items():
            if len(value) != num_stages:
                raise ValueError(f"{name} needs one entry per stage ({num_stages}), got {tuple(value)}")
        if embed_dim[0] % 8:
            raise ValueError(f"embed_dim[0] must be divisible by 8 (stem widths C/8, C/4, C/2), got {embed_dim[0]}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.min_input_size = _STEM_STRIDE  # an attribute: TorchScript reads no module-level ints
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.window_size = tuple(window_size)
        self.img_size = min(to_2tuple(img_size))

        c0 = embed_dim[0]
        self.patch_embed = nn.Sequential(
            OrderedDict(
                conv1=ConvNorm(in_chans, c0 // 8, 3, stride=2, padding=1, **dd),
                relu1=nn.ReLU(),
                conv2=ConvNorm(c0 // 8, c0 // 4, 3, stride=2, padding=1, **dd),
                relu2=nn.ReLU(),
                conv3=ConvNorm(c0 // 4, c0 // 2, 3, stride=2, padding=1, **dd),
                relu3=nn.ReLU(),
                conv4=ConvNorm(c0 // 2, c0, 3, stride=2, padding=1, **dd),
            )
        )

        windows = _stage_windows(self.img_size, window_size)
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depth))
        stages, self.feature_info = [], []
        prev_dim, reduction = c0, _STEM_STRIDE
        for i in range(num_stages):
            reduction *= 2 if i > 0 else 1
            stages.append(
                EfficientVitStage(
                    prev_dim,
                    embed_dim[i],
                    depth[i],
                    key_dim=key_dim[i],
                    num_heads=num_heads[i],
                    window_size=windows[i],
                    kernels=kernels,
                    downsample=i > 0,
                    drop_path=dpr[sum(depth[:i]) : sum(depth[: i + 1])],
                    zero_init_last=zero_init_last,
                    **dd,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=reduction, module=f"stages.{i}"))
            prev_dim = embed_dim[i]
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = embed_dim[-1]
        if not global_pool and num_classes:
            raise ValueError("a classifier (num_classes > 0) needs pooled features: set global_pool, e.g. 'avg'")
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head = self._make_head(num_classes, **dd)

    def _make_head(self, num_classes: int, device=None, dtype=None) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        width = self.num_features * self.global_pool.feat_mult()
        return NormLinear(width, num_classes, drop=self.drop_rate, device=device, dtype=dtype)

    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        """Size the attention windows for ``img_size`` (min of H, W), resizing the bias tables that change."""
        if img_size is not None:
            self.img_size = min(to_2tuple(img_size))
        for stage, ws in zip(self.stages, _stage_windows(self.img_size, self.window_size)):
            stage.set_window_size(ws)
        if img_size is not None:
            update_model_input_size(self, to_2tuple(img_size))

    @torch.no_grad()
    def fuse(self) -> EfficientVitMsra:
        """Fold every Conv-BN, BN-Linear and depthwise residual in place for inference; returns ``self``.

        The fused model equals the unfused one in eval mode (running statistics); it is not meant for training.
        """

        def walk(module: nn.Module) -> None:
            for name, child in module.named_children():
                if hasattr(child, "fuse"):
                    child = child.fuse()
                    setattr(module, name, child)
                walk(child)

        self.eval()
        walk(self)
        return self

    reparameterize = fuse

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, NormLinear) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        if num_classes and not self.global_pool.pool_type:
            raise ValueError("a classifier (num_classes > 0) needs pooled features: set global_pool, e.g. 'avg'")
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.head = self._make_head(num_classes, **get_device_dtype(self))
        self.head.train(self.training)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (strides 16, 32, 64). ``indices``: last n stages if int, these stages if a list.

        ``norm`` is accepted for API compatibility; the stage outputs have no extra norm.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        x = check_input(x, self.in_chans, self.min_input_size, "EfficientVitMsra")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        intermediates = []
        x = self.patch_embed(x)
        for i, stage in enumerate(stages):
            x = checkpoint(stage, x, use_reentrant=False) if self.grad_checkpointing else stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one ``indices`` needs (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            # the pooled features are now the last kept stage's: the old head no longer fits
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "EfficientVitMsra")
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _official_key(key: str) -> str:
    """Map one key of the official Cream layout (``blocks1..3``, ``patch_embed.{0,2,4,6}``, ``.c.``) to ours."""
    key = re.sub(r"^patch_embed\.(\d+)\.", lambda m: f"patch_embed.conv{int(m[1]) // 2 + 1}.", key)
    key = re.sub(r"\.c\.", ".conv.", key)
    key = re.sub(r"^head\.l\.", "head.linear.", key)
    key = re.sub(r"^blocks1\.", "stages.0.blocks.", key)
    m = re.match(r"^blocks([23])\.(\d+)\.(.*)$", key)
    if m:
        # Official stages 2 and 3 open with their subsample as three list entries: res1, merge, res2.
        stage, j, rest = int(m[1]) - 1, int(m[2]), m[3]
        part = {0: "downsample.res1", 1: "downsample.patchmerge", 2: "downsample.res2"}.get(j, f"blocks.{j - 3}")
        key = f"stages.{stage}.{part}.{rest}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: EfficientVitMsra) -> dict[str, Tensor]:
    """Accept official Cream, timm or our weights; resize attention biases to the model's windows.

    Official: keys renamed (:func:`_official_key`), ``attention_bias_idxs`` and the distillation head dropped,
    and 2-D weights of 1x1 convs (as some released files store them) given their two trailing unit dims.
    """
    official = any(k.startswith(("blocks1.", "patch_embed.0.")) for k in state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs") or key.startswith("head_dist."):
            continue
        if official:
            key = _official_key(key)
        ref = target.get(key)
        if ref is not None and value.shape != ref.shape:
            if key.endswith("attention_biases") and value.shape[0] == ref.shape[0]:
                value = resize_rel_pos_bias_table_levit(value.T, tuple(ref.shape[::-1])).T.contiguous()
            elif value.ndim == 2 and ref.ndim == 4 and ref.shape[2:] == (1, 1) and value.shape == ref.shape[:2]:
                value = value[:, :, None, None]
        out[key] = value
    return out


def _create_efficientvit_msra(variant: str, pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    return build_model_with_cfg(
        EfficientVitMsra,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (4, 4),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.conv1.conv",
        "classifier": "head.linear",
        "license": "mit",
        **kwargs,
    }


# timm's converted copies of the official weights (hub, tried first) and the official release (Cream EfficientViT
# classification README, the fallback; official layout, read by checkpoint_filter_fn).
_RELEASE = "https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/efficientvit_m{}.pth"
default_cfgs = generate_default_cfgs(
    {f"efficientvit_m{i}.r224_in1k": _cfg(url=_RELEASE.format(i), hf_hub_id="timm/") for i in range(6)}
)


@register_model
def efficientvit_m0(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4), kernels=(5, 5, 5, 5))
    return _create_efficientvit_msra("efficientvit_m0", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvit_m1(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(128, 144, 192), depth=(1, 2, 3), num_heads=(2, 3, 3), kernels=(7, 5, 3, 3))
    return _create_efficientvit_msra("efficientvit_m1", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvit_m2(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(128, 192, 224), depth=(1, 2, 3), num_heads=(4, 3, 2), kernels=(7, 5, 3, 3))
    return _create_efficientvit_msra("efficientvit_m2", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvit_m3(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(128, 240, 320), depth=(1, 2, 3), num_heads=(4, 3, 4), kernels=(5, 5, 5, 5))
    return _create_efficientvit_msra("efficientvit_m3", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvit_m4(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(128, 256, 384), depth=(1, 2, 3), num_heads=(4, 4, 4), kernels=(7, 5, 3, 3))
    return _create_efficientvit_msra("efficientvit_m4", pretrained, **dict(model_args, **kwargs))


@register_model
def efficientvit_m5(pretrained: bool = False, **kwargs) -> EfficientVitMsra:
    model_args = dict(embed_dim=(192, 288, 384), depth=(1, 3, 4), num_heads=(3, 3, 4), kernels=(7, 5, 3, 3))
    return _create_efficientvit_msra("efficientvit_m5", pretrained, **dict(model_args, **kwargs))
