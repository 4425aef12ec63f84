"""RAVLT: Rank-Augmented Vision Linear Transformer (Fan et al., "Breaking the Low-Rank Dilemma of Linear Attention",
CVPR 2025, arXiv:2411.07635).

A four-stage hierarchical backbone and a hybrid by design: stages 1-2 use rank-augmented linear attention
(:class:`backbones.blocks.RankAugmentedLinearAttention`, registry name ``rala``), stages 3-4 softmax attention with
the same projections (:class:`backbones.blocks.RoPEGatedAttention`, ``rala_softmax``); both carry a 2-D rotary
embedding, a depthwise LePE on v and an output gate. The stem is four 3x3 convs with BatchNorm (stride 4), stages
are joined by a strided 3x3 conv + BatchNorm. Every block adds a depthwise 3x3 position conv, then pre-norm attention
and a pre-norm FFN (1x1 -> GELU -> depthwise 3x3 with its own residual -> 1x1), each scaled by a layer scale. The
head is a 1x1 conv to 1024 channels + BatchNorm + SiLU *before* global pooling (here ``conv_head``, part of
``forward_features``, as timm's EfficientNet), then the classifier.

The released weights (qhfan/RALA, on the hub as ``aldjalkdf/RAVLT``) load through :func:`checkpoint_filter_fn`.
Differences from the official code:

* the trunk runs channels-last with Linear projections (the official NCHW trunk uses 1x1 convs and two permutes per
  LayerNorm); numerics are the same (tested);
* ``mixers=`` takes any registry mixer per stage or per block, so RAVLT doubles as a hybrid host;
* ``forward_intermediates`` / ``features_only`` (four NCHW maps, strides 4-32), which the official classifier lacks;
  the official dense backbones add a LayerNorm per output (``extra_norms``), which the mm adapter's ``out_norms``
  provide (configs/det, configs/seg).

Every size works as in the official code (the convs round up; RoPE tables are built from each map's size), so
there is nothing to pad.

Speed against the official formulation (``tools/benchmark.py ravlt_t --compare --mode both --threads 1``: CPU, one
thread, fp32, batch 8 at 224, median of 10 interleaved repeats, 2026-12-04 on a shared 2-core machine): ours takes
864 ms per inference batch against 1073 ms (1.24x faster) and 2.95 s per training step against 3.78 s (1.28x); at
batch 4, inference 1.14x. A rerun the same day (README table, docs/compare_cpu.csv): 685 ms against 783 ms (1.14x)
and 2.11 s against 2.52 s (1.19x). No GPU timing yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, LayerScale, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks.mixer_registry import create_mixer
from ..blocks.rank_augmented_attention import RankAugmentedLinearAttention, RoPEGatedAttention, RoPETables
from ._common import (
    StagedModelMixin,
    check_input,
    drop_absent_classifier,
    per_stage,
    rename_key,
    stage_group_matcher,
    unwrap_state_dict,
)
from ._stage import ConvNormDownsample, Stage, stage_drop_path_rates, stage_feature_info

__all__ = ["RAVLT", "checkpoint_filter_fn", "ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l"]

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # eps of every block norm in the released models


class ConvResMlp(nn.Module):
    """RAVLT's FFN over a channels-last map: fc1 -> act -> (h + DWConv_3x3(h)) -> fc2.

    State-dict keys ``fc1``, ``dwconv``, ``fc2`` (official ``FeedForwardNetwork``, with 1x1 convs).
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int = 3, act_layer=nn.GELU, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.act = act_layer()
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, **dd)
        self.fc2 = nn.Linear(hidden, dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        x = x + self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # NCHW view of the channels-last map
        return self.fc2(x)


class RAVLTBlock(nn.Module):
    """x + PosConv(x), then x + ls1 * Mixer(LN(x)) and x + ls2 * FFN(LN(x)); (B, H, W, C) in and out."""

    __constants__ = ["takes_rope"]  # a constant to TorchScript: only the call the mixer takes is compiled

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str = "rala",
        mixer_kwargs: dict[str, Any] | None = None,
        mlp_ratio: float = 3.5,
        layer_scale_init_value: float | None = 1.0,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.norm1 = _LayerNorm(dim, **dd)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}), **dd)
        self.takes_rope = isinstance(self.attn, RankAugmentedLinearAttention | RoPEGatedAttention)
        self.ls1 = LayerScale(dim, layer_scale_init_value, **dd) if layer_scale_init_value else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = _LayerNorm(dim, **dd)
        self.mlp = ConvResMlp(dim, int(mlp_ratio * dim), **dd)  # int() of the product, as the official ffn_dim
        self.ls2 = LayerScale(dim, layer_scale_init_value, **dd) if layer_scale_init_value else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = x + self.pos_embed(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.norm1(x)
        y = self.attn(y, rope=rope) if self.takes_rope else self.attn(y)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class Stem(nn.Module):
    """3x3/2 conv -> two 3x3 convs -> 3x3/2 conv, each with BatchNorm (GELU between): stride 4, NCHW."""

    def __init__(self, in_chans: int, out_chs: int, min_input_size: int = 32, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        mid = out_chs // 2
        self.in_chans = in_chans
        self.min_input_size = min_input_size
        self.conv1 = nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, **dd)
        self.norm1 = nn.BatchNorm2d(mid, **dd)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, **dd)
        self.norm2 = nn.BatchNorm2d(mid, **dd)
        self.conv3 = nn.Conv2d(mid, mid, 3, padding=1, **dd)
        self.norm3 = nn.BatchNorm2d(mid, **dd)
        self.conv4 = nn.Conv2d(mid, out_chs, 3, stride=2, padding=1, **dd)
        self.norm4 = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "RAVLT")
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        x = self.act(self.norm3(self.conv3(x)))
        return self.norm4(self.conv4(x))


class ConvHead(nn.Module):
    """1x1 conv + BatchNorm + SiLU on the last map, before pooling (official ``proj`` / ``norm`` / ``swish``)."""

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, **dd)
        self.norm = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


def _stage_mixers(mixers: Any, depths: Sequence[int]) -> list[list[str]]:
    """One mixer name per block from one entry per stage (a name, or a sequence of names cycled over its blocks)."""
    entries = per_stage(mixers, len(depths), "mixers", "RAVLT")
    out = []
    for i, (entry, depth) in enumerate(zip(entries, depths)):
        names = [entry] if isinstance(entry, str) else list(entry)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"RAVLT: mixers[{i}] must be a registry mixer name or a sequence of names, got {entry!r}")
        out.append([names[j % len(names)] for j in range(depth)])
    return out


class RAVLT(StagedModelMixin, nn.Module):
    """RAVLT (see the module docstring).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        depths: blocks per stage.
        embed_dims: channels per stage.
        num_heads: heads per stage (released: heads of 64 channels, 96 in RAVLT-B/L's stages 1-2).
        mixers: a registry mixer per stage, or a sequence per stage cycled over its blocks (released: rala in stages
            1-2, rala_softmax in 3-4).
        mixer_kwargs: options passed to every mixer.
        mlp_ratio: FFN hidden channels / channels (hidden = int(mlp_ratio * C)).
        layer_scale_init_values: layer-scale init per stage (None: no layer scale).
        head_hidden_size: channels of the 1x1 conv head before pooling (1024 in every released model).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """

    _family = "RAVLT"
    _norm_attr = "conv_head"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 2, 6, 2),
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        num_heads: Sequence[int] | int = (1, 2, 4, 8),
        mixers: Any = ("rala", "rala", "rala_softmax", "rala_softmax"),
        mixer_kwargs: dict[str, Any] | None = None,
        mlp_ratio: float = 3.5,
        layer_scale_init_values: Sequence[float | None] | float | None = 1.0,
        head_hidden_size: int = 1024,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        embed_dims = per_stage(embed_dims, num_stages, "embed_dims", "RAVLT")
        num_heads = per_stage(num_heads, num_stages, "num_heads", "RAVLT")
        ls_values = per_stage(layer_scale_init_values, num_stages, "layer_scale_init_values", "RAVLT")
        block_mixers = _stage_mixers(mixers, depths)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dims = tuple(embed_dims)
        self.num_features = self.head_hidden_size = head_hidden_size
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, embed_dims[0], min_input_size=4 * 2 ** (num_stages - 1), **dd)
        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        stages = []
        for i in range(num_stages):
            downsample = ConvNormDownsample(embed_dims[i - 1], embed_dims[i], **dd) if i > 0 else None
            blocks = [
                RAVLTBlock(
                    embed_dims[i],
                    num_heads[i],
                    mixer=block_mixers[i][j],
                    mixer_kwargs=mixer_kwargs,
                    mlp_ratio=mlp_ratio,
                    layer_scale_init_value=ls_values[i],
                    drop_path=drop_paths[i][j],
                    **dd,
                )
                for j in range(depths[i])
            ]
            # the rotary tables of the stage's map, built once for all its blocks (one head width per stage)
            head_dims = {b.attn.head_dim for b in blocks if b.takes_rope}
            rope = RoPETables(head_dims.pop()) if len(head_dims) == 1 else None
            stages.append(Stage(downsample, blocks, context=rope, permute_in=True, permute_out=True))
        self.feature_info = stage_feature_info(embed_dims)
        self.stages = nn.Sequential(*stages)
        self.conv_head = ConvHead(embed_dims[-1], head_hidden_size, **dd)
        self.head = ClassifierHead(head_hidden_size, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(_init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse, "conv_head")

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """As :class:`StagedModelMixin`; pruning the conv head (``prune_norm``) also makes the features its input."""
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if isinstance(self.conv_head, nn.Identity) and self.num_features != self.feature_info[len(self.stages) - 1][
            "num_chs"
        ]:
            self.num_features = self.head_hidden_size = self.feature_info[len(self.stages) - 1]["num_chs"]
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stages(x)
        return self.conv_head(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    # As the official code: conv weights (its 1x1 convs are our Linears) trunc-normal(.02), zero biases.
    if isinstance(module, nn.Linear | nn.Conv2d):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_OFFICIAL_RENAMES = (
    (r"^patch_embed\.proj\.0\.", "stem.conv1."),  # Sequential(conv, BN, GELU) x 3 + (conv, BN)
    (r"^patch_embed\.proj\.1\.", "stem.norm1."),
    (r"^patch_embed\.proj\.3\.", "stem.conv2."),
    (r"^patch_embed\.proj\.4\.", "stem.norm2."),
    (r"^patch_embed\.proj\.6\.", "stem.conv3."),
    (r"^patch_embed\.proj\.7\.", "stem.norm3."),
    (r"^patch_embed\.proj\.9\.", "stem.conv4."),
    (r"^patch_embed\.proj\.10\.", "stem.norm4."),
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"\.pos\.", ".pos_embed."),
    (r"\.norm([12])\.norm\.", r".norm\1."),  # official LayerNorm2d wraps an nn.LayerNorm
    (r"\.ffn\.", ".mlp."),
    (r"\.gamma_([12])$", r".ls\1.gamma"),
    (r"^proj\.", "conv_head.conv."),
    (r"^norm\.", "conv_head.norm."),
    (r"^head\.", "head.fc."),
)


def _same_but_unit_dims(a: torch.Size, b: torch.Size) -> bool:
    return [s for s in a if s != 1] == [s for s in b if s != 1]


def checkpoint_filter_fn(state_dict: dict[str, Any], model: RAVLT) -> dict[str, Tensor]:
    """Map the official qhfan/RALA layout onto ours (our own layout passes through).

    ``patch_embed.proj.{0,1,3,4,6,7,9,10}`` -> ``stem.conv1/norm1 ... conv4/norm4``; the end-of-stage
    ``layers.i.downsample.{reduction,norm}`` -> ``stages.(i+1).downsample.{conv,norm}``; ``layers.i.blocks`` ->
    ``stages.i.blocks``, ``pos`` -> ``pos_embed``, ``normX.norm`` -> ``normX``, ``ffn`` -> ``mlp``, ``gamma_X``
    (1, C, 1, 1) -> ``lsX.gamma`` (C,); ``proj`` / ``norm`` -> ``conv_head.conv`` / ``conv_head.norm``; ``head``
    (a 1x1 conv) -> ``head.fc``. 1x1-conv weights become Linear weights. The RoPE ``angle`` buffers (recomputed
    here) and the dense wrapper's ``extra_norms`` are dropped, and so is the classifier when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith(("patch_embed.", "layers.")) for k in state_dict):
        own = model.state_dict()
        out = {}
        for k, v in state_dict.items():
            if k.startswith("extra_norms.") or k.endswith(".RoPE.angle"):
                continue
            if k.startswith("layers.") and ".downsample." in k:
                i, rest = k[len("layers."):].split(".downsample.", 1)
                k = f"stages.{int(i) + 1}.downsample.{rest.replace('reduction.', 'conv.')}"
            else:
                k = rename_key(k, _OFFICIAL_RENAMES)
            if k in own and v.shape != own[k].shape and _same_but_unit_dims(v.shape, own[k].shape):
                v = v.reshape(own[k].shape)  # 1x1 conv -> Linear, (1, C, 1, 1) layer scale -> (C,)
            out[k] = v
        state_dict = out
    return drop_absent_classifier(state_dict, model)


def _create_ravlt(variant: str, pretrained: bool = False, **kwargs: Any) -> RAVLT:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_model_with_cfg(
        RAVLT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(file_name: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/{file_name}" if file_name else "",
        "hf_hub_id": "aldjalkdf/RAVLT" if file_name else None,
        "hf_hub_filename": file_name or None,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1",
        "classifier": "head.fc",
        "license": "unknown (qhfan/RALA has no LICENSE file)",
        **kwargs,
    }


# Released ImageNet-1k weights: qhfan/RALA README (a86314f), files on the hub repo aldjalkdf/RAVLT.
default_cfgs = generate_default_cfgs(
    {
        "ravlt_t.in1k": _cfg("RAVLT_T.pth"),
        "ravlt_s.in1k": _cfg("RAVLT_S.pth"),
        "ravlt_b.in1k": _cfg("RAVLT_B.pth"),
        "ravlt_l.in1k": _cfg("RAVLT_L.pth"),
    }
)


@register_model
def ravlt_t(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    model_args = dict(depths=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8))
    return _create_ravlt("ravlt_t", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_s(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    model_args = dict(depths=(3, 5, 9, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
    return _create_ravlt("ravlt_s", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_b(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    model_args = dict(
        depths=(4, 6, 12, 6), embed_dims=(96, 192, 384, 512), num_heads=(1, 2, 6, 8),
        layer_scale_init_values=(1.0, 1.0, 1e-6, 1e-6),
    )  # fmt: skip
    return _create_ravlt("ravlt_b", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_l(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    model_args = dict(
        depths=(4, 7, 19, 8), embed_dims=(96, 192, 448, 640), num_heads=(1, 2, 7, 10), layer_scale_init_values=1e-6
    )
    return _create_ravlt("ravlt_l", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._ravlt_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official formulation (NCHW trunk, 1x1 convs, LayerNorm2d permutes, einops-style
# head split, RoPE tables once per stage, explicit softmax attention in stages 3-4).
register_reference("ravlt_*", _official_reference, "official-nchw")
