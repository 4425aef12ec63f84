"""HybridNet: a four-stage hierarchical backbone that takes any token mixer of the registry in any block.

Built for ablations ("which mixer where?", "which parts of attention matter?"): the architecture around the mixer is
fixed and plain, so that two models differ only where their ``mixers=`` differ.

* stem: 3x3 / 2 conv -> BatchNorm -> GELU -> 3x3 / 2 conv -> LayerNorm (stride 4); stages 2-4 start with a
  LayerNorm + 3x3 / 2 conv downsampling (strides 8, 16, 32; ceil(H / stride) maps, any input size);
* blocks: pre-norm residual, ``x + ls1 * mixer(norm1(x))`` then ``x + ls2 * ffn(norm2(x))``; the FFN is TransNeXt's
  convolutional GLU (:class:`backbones.blocks.ConvGLU`, hidden width chosen to cost as much as an MLP of
  ``mlp_ratio``; ``ffn="mlp"`` takes timm's ``Mlp``); layer scale (``ls``) when ``layer_scale_init_value`` is set;
* a LayerNorm after the last stage, then timm's ``ClassifierHead``.

``mixers`` picks the token mixer of every block, by name from :func:`backbones.blocks.list_mixers`:

* one name: every block (``mixers="global"``);
* one entry per stage, each a name (every block of the stage), a list of one name per block, or a ``+``-joined
  cycle (``"halo+global"``: halo, global, halo, ... over the stage's depth);
  e.g. ``("focal", "focal", ["halo", "global"] * 3, "global")``;
* a pattern string with one ``|``-separated entry per stage: ``"focal | focal | halo+global | global"``; an entry
  ``name*k`` repeats a name (``"dwconv*2+global"``).

``mixer_kwargs`` gives mixers their options: ``{"routed": {"topk": 8}}`` for every stage, or one such mapping per
stage. Heads: ``num_heads`` per stage, else channels // ``head_dim``. A mixer whose ``uses_stage_input`` is True
(``decoupled``) gets the stage's input map (the downsampling output) as ``stage_input``.

Tokens stay (B, H, W, C) inside the network; stage outputs and ``forward_features`` are NCHW views of channels-last
tensors (``_nhwc_stages``). No pretrained weights: hybrids are trained from scratch (``tools/ablate.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, LayerScale, Mlp, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from .._registry import register_model
from ..blocks.conv_glu import ConvGLU, glu_hidden_features
from ..blocks.mixer_registry import create_mixer, list_mixers, mixer_info
from ._common import StagedModelMixin, check_input, per_stage, stage_group_matcher
from ._stage import Stage, heads_per_stage, stage_drop_path_rates, stage_feature_info

__all__ = [
    "HybridNet",
    "resolve_mixers",
    "hybrid_tiny",
    "hybrid_tiny_global",
    "hybrid_tiny_identity",
    "hybrid_tiny_pool",
    "hybrid_tiny_focal_routed",
    "hybrid_tiny_halo_global",
    "hybrid_tiny_static_global",
    "hybrid_tiny_linear_global",
]

# Parameters the optimiser should not decay (besides 1-D ones): position tables and temperatures of the mixers.
NO_WEIGHT_DECAY_KEYWORDS = (
    "query_embedding", "relative_pos_bias_local", "cpb", "temperature", "position_logits", "pos_embed",
    "attention_biases",
)
FFN_TYPES = ("convglu", "mlp")


def _stage_entry(entry: Any, depth: int, stage: int) -> tuple[str, ...]:
    """The mixer names of one stage's ``depth`` blocks from one ``mixers`` entry."""
    if isinstance(entry, str):
        names: list[str] = []
        for part in entry.split("+"):
            name, _, count = part.strip().partition("*")
            if count and not count.strip().isdigit():
                raise ValueError(f"HybridNet: mixers entry {entry!r} of stage {stage}: '{part}' is not 'name*count'")
            names += [name.strip()] * (int(count) if count else 1)
        if not names or any(not n for n in names):
            raise ValueError(f"HybridNet: mixers entry {entry!r} of stage {stage} names no mixer")
        names = [names[i % len(names)] for i in range(depth)]  # a cycle over the stage's depth
    elif isinstance(entry, Sequence):
        names = list(entry)
        if len(names) != depth:
            raise ValueError(
                f"HybridNet: mixers of stage {stage} is a list of {len(names)} names for {depth} blocks; give one "
                f"name per block, a single name, or a '+'-joined cycle such as 'halo+global'"
            )
    else:
        raise TypeError(f"HybridNet: mixers entry of stage {stage} must be a name or a list of names, got {entry!r}")
    for n in names:
        mixer_info(n)  # unknown names: a ValueError that lists the known ones
    return tuple(names)


def resolve_mixers(mixers: str | Sequence[Any], depths: Sequence[int]) -> tuple[tuple[str, ...], ...]:
    """One tuple of mixer names per stage (one name per block) from any ``mixers=`` form (see the module docstring)."""
    num_stages = len(depths)
    if isinstance(mixers, str):
        parts = [p for p in mixers.split("|")] if "|" in mixers else [mixers]
        if len(parts) == 1:
            parts = parts * num_stages
        if len(parts) != num_stages:
            raise ValueError(
                f"HybridNet: mixers pattern {mixers!r} has {len(parts)} '|'-separated stages, the model {num_stages}"
            )
        entries: Sequence[Any] = parts
    else:
        entries = list(mixers)
        if len(entries) != num_stages:
            raise ValueError(
                f"HybridNet: mixers needs one entry per stage ({num_stages}), got {len(entries)}: {mixers!r}; known "
                f"mixers: {', '.join(list_mixers())}"
            )
    return tuple(_stage_entry(e, d, i) for i, (e, d) in enumerate(zip(entries, depths)))


class Stem(nn.Module):
    """Two 3x3 / 2 convolutions (BatchNorm + GELU between), then a LayerNorm: NCHW image -> (B, H/4, W/4, C)."""

    def __init__(self, in_chans: int, dim: int, min_input_size: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chans, self.min_input_size = in_chans, min_input_size
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(dim // 2, **dd)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1, **dd)
        self.norm = nn.LayerNorm(dim, eps=1e-6, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "HybridNet")
        x = self.act(self.bn(self.conv1(x.contiguous(memory_format=torch.channels_last))))
        return self.norm(self.conv2(x).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """LayerNorm then a 3x3 / 2 convolution on a channels-last map: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C')."""

    def __init__(self, in_dim: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=1e-6, device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class HybridBlock(nn.Module):
    """Pre-norm residual block around any registry mixer and a ConvGLU / MLP; x is (B, H, W, C)."""

    __constants__ = ["uses_stage_input"]  # a constant to TorchScript: only the call the mixer takes is compiled

    def __init__(
        self,
        dim: int,
        mixer: str,
        num_heads: int,
        mixer_kwargs: Mapping[str, Any] | None = None,
        ffn: str = "convglu",
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        layer_scale_init_value: float | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.mixer_name = mixer
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mixer = create_mixer(mixer, dim, num_heads, **dict(mixer_kwargs or {}), **dd)
        self.uses_stage_input = bool(getattr(self.mixer, "uses_stage_input", False))
        ls = layer_scale_init_value
        self.ls1 = LayerScale(dim, ls, **dd) if ls is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        if ffn == "convglu":
            self.mlp = ConvGLU(dim, glu_hidden_features(dim, mlp_ratio), drop=proj_drop, **dd)
        else:
            self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        self.ls2 = LayerScale(dim, ls, **dd) if ls is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, stage_input: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        h = self.mixer(h, stage_input=stage_input) if self.uses_stage_input else self.mixer(h)
        x = x + self.drop_path1(self.ls1(h))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class HybridNet(StagedModelMixin, nn.Module):
    """Four-stage hierarchical backbone with a token mixer chosen per block (see the module docstring).

    Args:
        mixers: the mixer of every block: a name, one entry per stage, or a ``|`` pattern (module docstring).
        in_chans: image channels.
        num_classes: classifier outputs (0: none).
        global_pool: head pooling type.
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: heads per stage (an int for all); default channels // ``head_dim``.
        head_dim: head width used when ``num_heads`` is not given.
        mixer_kwargs: ``{mixer name: kwargs}`` for every stage, or a sequence of such mappings, one per stage.
        ffn: "convglu" (TransNeXt's convolutional GLU at the cost of an MLP of ``mlp_ratio``) or "mlp".
        mlp_ratio: FFN budget per stage (or one value).
        layer_scale_init_value: initial layer scale of both branches (None: no layer scale).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout inside the FFNs.
        drop_path_rate: stochastic depth, linear over all blocks.
    """

    _family = "HybridNet"
    _nhwc_stages = True

    def __init__(
        self,
        mixers: str | Sequence[Any] = ("dwconv", "dwconv", "global", "global"),
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: int | Sequence[int] | None = None,
        head_dim: int = 32,
        mixer_kwargs: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Mapping[str, Any]]] | None = None,
        ffn: str = "convglu",
        mlp_ratio: float | Sequence[float] = 4.0,
        layer_scale_init_value: float | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        embed_dims = per_stage(embed_dims, num_stages, "embed_dims", "HybridNet")
        num_heads = heads_per_stage(num_heads, embed_dims, head_dim, "HybridNet")
        mlp_ratios = per_stage(mlp_ratio, num_stages, "mlp_ratio", "HybridNet")
        if ffn not in FFN_TYPES:
            raise ValueError(f"HybridNet: ffn must be one of {FFN_TYPES}, got {ffn!r}")
        if mixer_kwargs is None or isinstance(mixer_kwargs, Mapping):
            stage_mixer_kwargs = [dict(mixer_kwargs or {})] * num_stages
        else:
            stage_mixer_kwargs = list(per_stage(list(mixer_kwargs), num_stages, "mixer_kwargs", "HybridNet"))
        self.mixers = resolve_mixers(mixers, depths)
        for i, stage_kwargs in enumerate(stage_mixer_kwargs):
            if not isinstance(stage_kwargs, Mapping):
                raise TypeError(f"HybridNet: mixer_kwargs maps mixer names to their kwargs, got {stage_kwargs!r}")
            unused = [n for n in stage_kwargs if n not in self.mixers[i]]
            for n in unused:
                mixer_info(n)  # a typo: the error lists the known mixers
            if unused and not isinstance(mixer_kwargs, Mapping):  # per-stage kwargs for a mixer the stage lacks
                raise ValueError(f"HybridNet: mixer_kwargs of stage {i} set {unused}, which stage {i} does not use "
                                 f"(its mixers: {sorted(set(self.mixers[i]))})")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dims = embed_dims
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, embed_dims[0], min_input_size=4 * 2 ** (num_stages - 1), **dd)
        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        block_kwargs = dict(ffn=ffn, proj_drop=proj_drop_rate, layer_scale_init_value=layer_scale_init_value, **dd)
        stages = []
        for i in range(num_stages):
            downsample = Downsample(embed_dims[i - 1], embed_dims[i], **dd) if i > 0 else None
            blocks = [
                HybridBlock(
                    embed_dims[i],
                    name,
                    num_heads[i],
                    stage_mixer_kwargs[i].get(name),
                    mlp_ratio=mlp_ratios[i],
                    drop_path=drop_paths[i][j],
                    **block_kwargs,
                )
                for j, name in enumerate(self.mixers[i])
            ]
            # a stage with a mixer that reads the stage input (decoupled) hands every block the downsampled map
            stage_input = nn.Identity() if any(b.uses_stage_input for b in blocks) else None
            stages.append(Stage(downsample, blocks, context=stage_input))
        self.feature_info = stage_feature_info(embed_dims)
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # as TransNeXt / ViT: trunc-normal(0.02), zero bias
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if any(k in n for k in NO_WEIGHT_DECAY_KEYWORDS)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse)

    def forward_features(self, x: Tensor) -> Tensor:
        """Final features, NCHW (a view of the channels-last map)."""
        return self.norm(self.stages(self.stem(x))).permute(0, 3, 1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _create_hybrid(variant: str, pretrained: bool = False, **kwargs: Any) -> HybridNet:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_model_with_cfg(
        HybridNet,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1",
        "classifier": "head.fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"{name}.untrained": _cfg() for name in __all__ if name.startswith("hybrid_")})

# One width / depth for every named hybrid: they differ only in their mixers (see docs/hybrids.md).
_TINY = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), head_dim=32)


@register_model
def hybrid_tiny(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Convolutional early stages, global attention late (CAFormer-like); ``mixers=`` makes it anything else."""
    model_args = dict(_TINY, mixers=("dwconv", "dwconv", "global", "global"))
    return _create_hybrid("hybrid_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_global(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Global attention in every block: the dot-product + softmax reference of the ablation."""
    model_args = dict(_TINY, mixers="global")
    return _create_hybrid("hybrid_tiny_global", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_identity(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """No token mixing at all (only the stem, the downsampling convs and the ConvGLU's 3x3 see neighbours)."""
    model_args = dict(_TINY, mixers="identity")
    return _create_hybrid("hybrid_tiny_identity", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_pool(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """PoolFormer's pooling mixer everywhere: mixing, but with fixed, input-independent weights."""
    model_args = dict(_TINY, mixers="pool")
    return _create_hybrid("hybrid_tiny_pool", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_focal_routed(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Focal modulation in the high-resolution stages, bi-level routing attention in the low-resolution ones."""
    model_args = dict(_TINY, mixers=("focal", "focal", "routed", "routed"))
    return _create_hybrid("hybrid_tiny_focal_routed", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_halo_global(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Halo attention early, halo and global attention interleaved in stage 3, global attention in stage 4."""
    model_args = dict(_TINY, mixers=("halo", "halo", "halo+global", "global"))
    return _create_hybrid("hybrid_tiny_halo_global", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_static_global(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Input-independent (static) mixing interleaved with global attention in stages 3-4, static before."""
    model_args = dict(_TINY, mixers=("static", "static", "static+global", "static+global"))
    return _create_hybrid("hybrid_tiny_static_global", pretrained, **dict(model_args, **kwargs))


@register_model
def hybrid_tiny_linear_global(pretrained: bool = False, **kwargs: Any) -> HybridNet:
    """Linear attention in stages 1-2, softmax attention in stages 3-4 (RAVLT's layout)."""
    model_args = dict(_TINY, mixers=("linear", "linear", "global", "global"))
    return _create_hybrid("hybrid_tiny_linear_global", pretrained, **dict(model_args, **kwargs))
