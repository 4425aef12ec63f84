"""TransNeXt: Robust Foveal Visual Perception for Vision Transformers (Shi, CVPR 2024, arXiv:2311.17132).

A four-stage PVTv2-like pyramid (overlapping patch embeddings: 7x7/4 stem, 3x3/2 downsamples; strides 4, 8, 16,
32) whose blocks are pre-norm ``x + attn(norm1(x))``, ``x + ConvGLU(norm2(x))`` with a LayerNorm closing every
stage. The token mixer of stages 1-3 is aggregated attention (:class:`backbones.blocks.AggregatedAttention`):
each query sees its 3x3 neighbourhood at full resolution and a pooled map of the whole image under one softmax,
with cosine attention, a learned query embedding, learnable tokens and a continuous relative position bias (an
MLP over log-spaced offsets). Stage 4 uses the same length-scaled cosine attention over all tokens. The channel
mixer is the convolutional GLU (:class:`backbones.blocks.ConvGLU`). No position embedding, no class token.

Not in timm; the official repository (DaiShiResearch/TransNeXt) is the reference for weights and numerics. Unlike
the official classification model, which is built for one input size, this one takes any size (feature maps are
ceil(H / stride)), as the official detection/segmentation backbones do, in both of their modes:

* ``pos_bias_mode="extrapolate"`` (default): the pooled grid and the position bias follow the input; at the
  official ``img_size`` this is exactly the official classification model (re-instantiated per size there);
* ``pos_bias_mode="interpolate"``: the bias is computed at ``img_size`` and resized bilinearly to the input, as
  the official Mask R-CNN / UPerNet backbones do by default (``img_size`` 800 / 512 there);
* ``fixed_pool_size=P`` pins the pooled grid to P x P in stages 1-3 (the official "linear" inference mode, P=7
  for the released 224 models); combinable with either bias mode.

``pretrain_size`` (224 for every released model, also the 384 fine-tunes) only scales the position-bias offsets.

Tokens stay in (B, H, W, C) inside a stage; stage outputs and ``forward_features`` are NCHW tensors with
channels-last strides. The official CUDA extension is not needed: see the attention module for how the
neighbourhood terms are computed without unfolding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks.aggregated_attention import AggregatedAttention, LengthScaledAttention, PosBiasMode
from ..blocks.conv_glu import ConvGLU, glu_hidden_features
from ..blocks.head_mixture import MOH_AUX_LOSS_WEIGHT, HeadMixture
from ._common import StagedModelMixin, check_input, drop_absent_classifier, per_stage, rename_key, unwrap_state_dict
from ._stage import Stage, stage_drop_path_rates, stage_feature_info

__all__ = [
    "TransNeXt",
    "checkpoint_filter_fn",
    "transnext_micro",
    "transnext_tiny",
    "transnext_small",
    "transnext_base",
]

# Parameter names the official recipes exclude from weight decay (besides 1-D parameters).
NO_WEIGHT_DECAY_KEYWORDS = ("query_embedding", "relative_pos_bias_local", "cpb", "temperature")
_LAYER_NORM_1E6 = partial(nn.LayerNorm, eps=1e-6)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of positive ints, got {value!r}")
    return pair


class OverlapPatchEmbed(nn.Module):
    """Conv (kernel > stride, padding kernel // 2) then LayerNorm: NCHW in, (B, ceil(H/s), ceil(W/s), C) out.

    With ``min_input_size`` set (the stem) it validates the image first.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        stride: int,
        min_input_size: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chs = in_chs
        self.min_input_size = min_input_size
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, **dd)
        self.norm = nn.LayerNorm(out_chs, **dd)  # default eps 1e-5 here, unlike the blocks (official)

    def forward(self, x: Tensor) -> Tensor:
        if self.min_input_size is not None:
            x = check_input(x, self.in_chs, self.min_input_size, "TransNeXt")
            x = x.contiguous(memory_format=torch.channels_last)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class TransNeXtBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + ConvGLU(norm2(x))``; x is (B, H, W, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        window_size: int | None = 3,
        pool_ratio: int = 8,
        fixed_pool_size: int | None = None,
        pretrain_grid: tuple[int, int] = (56, 56),
        pos_bias_mode: PosBiasMode = "extrapolate",
        pos_bias_grid: tuple[int, int] | None = None,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        moh: dict | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        common = dict(
            num_heads=num_heads,
            moh=moh,
            pretrain_grid=pretrain_grid,
            pos_bias_mode=pos_bias_mode,
            pos_bias_grid=pos_bias_grid,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            **dd,
        )
        self.norm1 = norm_layer(dim, **dd)
        if pool_ratio == 1:  # official rule: no spatial reduction -> attention over all tokens
            self.attn = LengthScaledAttention(dim, **common)
        else:
            if window_size is None:
                raise ValueError(f"a stage with pool_ratio {pool_ratio} > 1 needs a window_size, got None")
            self.attn = AggregatedAttention(
                dim, window_size=window_size, pool_ratio=pool_ratio, fixed_pool_size=fixed_pool_size, **common
            )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = ConvGLU(dim, glu_hidden_features(dim, mlp_ratio), drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TransNeXt(StagedModelMixin, nn.Module):
    """TransNeXt (see the module docstring).

    Args:
        img_size: reference input size: the size the position bias is computed at in "interpolate" mode (and
            the size the official classification model is built for). Unused in "extrapolate" mode.
        pretrain_size: input size at pre-training; scales the position-bias offsets (224 for all released weights).
        in_chans: image channels.
        num_classes: classifier outputs (0: none).
        global_pool: head pooling type.
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: heads per stage.
        mlp_ratios: ConvGLU budget per stage (hidden = int(2 * int(C * ratio) / 3)).
        window_sizes: neighbourhood side per stage (None where the stage uses full attention).
        pool_ratios: pooled grid = map // ratio per stage; 1 means full attention (``sr_ratios`` officially).
        fixed_pool_size: pooled grid fixed to P x P in the aggregated-attention stages (official linear mode).
        pos_bias_mode: "extrapolate" or "interpolate" (see the module docstring).
        patch_size: stem stride (kernel 2 * patch_size - 1).
        qkv_bias: bias in the q / kv / qkv projections.
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after the attention and ConvGLU projections (``drop_rate`` officially).
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear over all blocks (official ImageNet recipes: 0.15 micro, 0.25 tiny,
            0.45 small, 0.6 base).
        norm_layer: norm of the blocks and stage ends (LayerNorm eps 1e-6).
        moh: Mixture-of-Head attention per stage (MoH-ViT, :mod:`backbones.models.moh_transnext`): None, or one
            entry per stage, each None or ``dict(shared_heads=S, routed_heads=k)`` for every attention of the stage.
    """

    _family = "TransNeXt"
    _stem_attr = None
    _norm_attr = None

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        pretrain_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (72, 144, 288, 576),
        depths: Sequence[int] = (2, 2, 15, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratios: float | Sequence[float] = (8, 8, 4, 4),
        window_sizes: int | None | Sequence[int | None] = (3, 3, 3, None),
        pool_ratios: int | Sequence[int] = (8, 4, 2, 1),
        fixed_pool_size: int | None = None,
        pos_bias_mode: PosBiasMode = "extrapolate",
        patch_size: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: type[nn.Module] = _LAYER_NORM_1E6,
        moh: Sequence[dict | None] | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        moh = per_stage(moh, num_stages, "moh", "TransNeXt")
        embed_dims = per_stage(embed_dims, num_stages, "embed_dims", "TransNeXt")
        num_heads = per_stage(num_heads, num_stages, "num_heads", "TransNeXt")
        mlp_ratios = per_stage(mlp_ratios, num_stages, "mlp_ratios", "TransNeXt")
        window_sizes = per_stage(window_sizes, num_stages, "window_sizes", "TransNeXt")
        pool_ratios = per_stage(pool_ratios, num_stages, "pool_ratios", "TransNeXt")
        img_size = _pair(img_size, "img_size")
        pretrain_size = _pair(pretrain_size, "pretrain_size")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.pretrain_size = pretrain_size
        self.pos_bias_mode = pos_bias_mode
        self.embed_dims = embed_dims
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False

        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        stages = []
        for i in range(num_stages):
            stride = patch_size * 2**i
            # Official: per-stage grids by floor division of the (square or pair) image size.
            grid = lambda size, s=stride: (max(1, size[0] // s), max(1, size[1] // s))  # noqa: E731
            block_kwargs = dict(
                num_heads=num_heads[i],
                mlp_ratio=mlp_ratios[i],
                window_size=window_sizes[i],
                pool_ratio=pool_ratios[i],
                fixed_pool_size=fixed_pool_size,
                pretrain_grid=grid(pretrain_size),
                pos_bias_mode=pos_bias_mode,
                pos_bias_grid=grid(img_size) if pos_bias_mode == "interpolate" else None,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                norm_layer=norm_layer,
                moh=moh[i],
            )
            # every stage starts with an overlapping patch embedding (the stem: stage 0's, which checks the image)
            downsample = OverlapPatchEmbed(
                in_chans if i == 0 else embed_dims[i - 1],
                embed_dims[i],
                kernel_size=2 * patch_size - 1 if i == 0 else 3,
                stride=patch_size if i == 0 else 2,
                min_input_size=patch_size * 2 ** (num_stages - 1) if i == 0 else None,
                **dd,
            )
            blocks = [TransNeXtBlock(embed_dims[i], drop_path=dp, **block_kwargs, **dd) for dp in drop_paths[i]]
            # patch embedding -> (B, H, W, C) blocks -> a closing LayerNorm -> NCHW (channels-last memory)
            stages.append(Stage(downsample, blocks, norm=norm_layer(embed_dims[i], **dd), permute_out=True))
        self.feature_info = stage_feature_info(embed_dims, first_reduction=patch_size)
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.moh_aux_loss_weight = MOH_AUX_LOSS_WEIGHT

        for module in self.modules():
            _init_weights(module)

    @torch.jit.ignore
    def moh_aux_loss(self) -> Tensor | None:
        """Mean MoH load-balancing loss of the routed attentions in the latest training forward (None without
        routed heads); the official recipe adds ``moh_aux_loss_weight`` (0.01) times it to the task loss."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, HeadMixture) and m.aux_loss is not None]
        return torch.stack(losses).mean() if losses else None

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if any(k in n for k in NO_WEIGHT_DECAY_KEYWORDS)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        if coarse:
            blocks = r"^stages\.(\d+)"
        else:
            blocks = [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.norm", (99999,)),
            ]
        return dict(stem=r"^stages\.0\.downsample", blocks=blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """Official init: Linear trunc-normal(0.02), Conv normal(0, sqrt(2 / fan_out)), zero biases."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# Official classification layout -> ours. Dense-task (mmdet/mmseg) checkpoints carry the same keys under "backbone.".
_OFFICIAL_KEY_MAP = (
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.norm."),
    (r"^head\.", "head.fc."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),  # official wraps the depthwise conv in a module
    (r"\.attn\.sr\.", ".attn.pool_proj."),
    (r"\.attn\.norm\.", ".attn.pool_norm."),
    (r"\.attn\.(wg(?:_0|_1)?)\.", r".attn.moh.\1."),  # MoH-ViT routers (SkyworkAI/MoH), inside our HeadMixture
)
# Non-persistent buffers of the official modules, dropped if a checkpoint carries them anyway.
_OFFICIAL_BUFFERS = re.compile(r"(relative_pos_index\d|relative_coords_table\d|seq_length_scale|padding_mask)$")


def checkpoint_filter_fn(state_dict: dict[str, Any], model: TransNeXt) -> dict[str, Tensor]:
    """Map official TransNeXt weights (classification, or the backbone of a dense-task checkpoint) onto ``model``.

    Official keys are renamed (``patch_embed{i}`` / ``block{i}.{j}`` / ``norm{i}`` -> ``stages.{i-1}.downsample`` /
    ``.blocks.{j}`` / ``.norm``, ``head`` -> ``head.fc``, ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``, ``attn.sr`` /
    ``attn.norm`` -> ``attn.pool_proj`` / ``attn.pool_norm``, MoH-ViT's routers ``attn.wg*`` -> ``attn.moh.wg*``); our
    own layout passes through. The classifier is
    dropped when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith("backbone.") for k in state_dict):  # an mmdet/mmseg checkpoint: keep the backbone
        state_dict = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {}
    for k, v in state_dict.items():
        if _OFFICIAL_BUFFERS.search(k):
            continue
        if not k.startswith(("stages.", "head.fc.")):
            k = rename_key(k, _OFFICIAL_KEY_MAP)
        out[k] = v
    return drop_absent_classifier(out, model)


def _create_transnext(variant: str, pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 15, 2))))))
    return build_model_with_cfg(
        TransNeXt,
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
        "crop_pct": 0.875,  # official eval: resize to size / 0.875, centre crop
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stages.0.downsample.proj",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2311.17132",
        "paper_name": "TransNeXt: Robust Foveal Visual Perception for Vision Transformers",
        "origin_url": "https://github.com/DaiShiResearch/TransNeXt",
        **kwargs,
    }


def _hf(repo: str, filename: str, **kwargs: Any) -> dict[str, Any]:
    """Official weights on the Hugging Face hub (plain state dicts in the official layout)."""
    url = f"https://huggingface.co/DaiShiResearch/{repo}/resolve/main/{filename}"
    return _cfg(url=url, hf_hub_id=f"DaiShiResearch/{repo}", hf_hub_filename=filename, **kwargs)


# Official eval at 384: direct resize to 384 x 384 without cropping.
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, crop_mode="squash")

default_cfgs = generate_default_cfgs(
    {
        "transnext_micro.in1k": _hf("transnext-micro-224-1k", "transnext_micro_224_1k.pth"),
        "transnext_tiny.in1k": _hf("transnext-tiny-224-1k", "transnext_tiny_224_1k.pth"),
        "transnext_small.in1k": _hf("transnext-small-224-1k", "transnext_small_224_1k.pth"),
        "transnext_small.in1k_384": _hf("transnext-small-384-1k-ft-1k", "transnext_small_384_1k_ft_1k.pth", **_384),
        "transnext_base.in1k": _hf("transnext-base-224-1k", "transnext_base_224_1k.pth"),
        "transnext_base.in1k_384": _hf("transnext-base-384-1k-ft-1k", "transnext_base_384_1k_ft_1k.pth", **_384),
    }
)


@register_model
def transnext_micro(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = dict(embed_dims=(48, 96, 192, 384), depths=(2, 2, 15, 2), num_heads=(2, 4, 8, 16))
    return _create_transnext("transnext_micro", pretrained, **dict(model_args, **kwargs))


@register_model
def transnext_tiny(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = dict(embed_dims=(72, 144, 288, 576), depths=(2, 2, 15, 2), num_heads=(3, 6, 12, 24))
    return _create_transnext("transnext_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def transnext_small(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = dict(embed_dims=(72, 144, 288, 576), depths=(5, 5, 22, 5), num_heads=(3, 6, 12, 24))
    return _create_transnext("transnext_small", pretrained, **dict(model_args, **kwargs))


@register_model
def transnext_base(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = dict(embed_dims=(96, 192, 384, 768), depths=(5, 5, 23, 5), num_heads=(4, 8, 16, 32))
    return _create_transnext("transnext_base", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._transnext_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official native formulation (unfold windows, concatenated softmax, gathered CPB).
register_reference("transnext_*", _official_reference, "official-unfold")
