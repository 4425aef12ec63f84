"""LITv2: Fast Vision Transformers with HiLo Attention (Pan et al., NeurIPS 2022, arXiv:2205.13213).

A four-stage hierarchical backbone (4x patch embedding, channels doubling) without any position embedding.
The first two stages have no attention at all: their blocks are pre-norm ConvFFNs (an MLP with a depthwise 3x3
conv inside, :class:`backbones.blocks.ConvFFN`), which at high resolution cost far less than attention and,
the paper argues, learn mostly local patterns anyway. Stages 3 and 4 use HiLo attention
(:class:`backbones.blocks.HiLoAttention`): a fraction alpha = 0.9 of the heads attend to 2x2-average-pooled
keys (Lo-Fi, global), the rest attend inside 2x2 windows (Hi-Fi, local); in stage 4 (window size 1) HiLo is
plain global attention. Stages are joined by deformable token merging (:class:`backbones.blocks.
DeformableTokenMerging`, a deformable 2x2/s2 conv with BatchNorm and GELU, via ``torchvision.ops``). The head is
LayerNorm -> global average -> linear.

The released ziplab/LITv2 weights load through :func:`checkpoint_filter_fn`. Differences from the official code:

* any input size: the patch embedding and every token merging pad bottom/right (an H x W image gives stage maps
  of ceil(H / 4), ceil(H / 8), ... rows; the official detection backbone drops odd rows in its token merging,
  its classifier accepts only its training size), HiLo pads its windows and, with ``mask_padding=True``
  (default), keeps the padding out of the softmax and the pooling (``mask_padding=False``: official numerics);
* ``forward_intermediates`` / ``features_only`` (four NCHW maps, strides 4-32); the official per-output norms of
  the detection / segmentation backbones are the mm adapter's ``out_norms``;
* names: token merging opens the next stage (``stages.{i+1}.downsample``) as in timm, where the official code
  closes stage i with it; ``patch_embed`` is ``stem``; HiLo's ``h_*`` / ``l_*`` are ``hifi_*`` / ``lofi_*``.

Heads are given by ``head_dim`` (32 in every released model: 3/6/12/24 heads for S and M, 4/8/16/32 for B).
The official ImageNet recipe trains the offset convs (``conv_offset.weight``) at 0.01x the learning rate.
"""

from __future__ import annotations

import pickle
import re
import types
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from timm.models._manipulate import adapt_input_conv
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks._windows import pad_to_multiple
from ..blocks.conv_ffn import ConvFFN
from ..blocks.deformable_token_merging import DeformableTokenMerging
from ..blocks.hilo_attention import HiLoAttention
from ._common import (
    StagedModelMixin,
    check_input,
    drop_absent_classifier,
    load_checkpoint,
    per_stage,
    rename_key,
    stage_group_matcher,
    unwrap_state_dict,
)
from ._stage import Stage, heads_per_stage, stage_drop_path_rates, stage_feature_info

__all__ = ["LITv2", "checkpoint_filter_fn", "litv2_small", "litv2_medium", "litv2_base"]

_layer_norm = partial(nn.LayerNorm, eps=1e-5)  # LITv2 uses nn.LayerNorm's default eps everywhere


class Stem(nn.Module):
    """Non-overlapping 4x4 patch embedding + LayerNorm; pads the image to a multiple of 4; NCHW in, NHWC out."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        patch_size: int = 4,
        min_input_size: int = 32,
        norm_layer: type[nn.Module] = _layer_norm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.min_input_size = min_input_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, **dd)
        self.norm = norm_layer(dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "LITv2")
        p = self.patch_size
        x = pad_to_multiple(x, p, channels_last=False)  # as the official detection backbone
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)


class ConvFFNBlock(nn.Module):
    """The attention-free block of LITv2's first stages, channels-last: x + DropPath(ConvFFN(norm(x)))."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = _layer_norm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm = norm_layer(dim, **dd)  # the official name is norm2 (the block has no norm1)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.mlp(self.norm(x)))


class HiLoBlock(nn.Module):
    """Pre-norm HiLo attention and ConvFFN residual branches, channels-last (B, H, W, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 2,
        alpha: float = 0.9,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        mask_padding: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = _layer_norm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = norm_layer(dim, **dd)
        self.attn = HiLoAttention(
            dim,
            num_heads=num_heads,
            window_size=window_size,
            alpha=alpha,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            mask_padding=mask_padding,
            **dd,
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class LITv2(StagedModelMixin, nn.Module):
    """LITv2 classifier / backbone (see the module docstring).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        embed_dim: channels of stage 0; stage i has ``embed_dim * 2**i``.
        depths: blocks per stage.
        num_heads: heads per stage (default: channels // ``head_dim``, at least 1).
        head_dim: head width used when ``num_heads`` is not given.
        attn_stages: per stage, HiLo blocks (True) or attention-free ConvFFN blocks (False).
        window_sizes: HiLo window / pooling size per stage (or one int); entries of attention-free stages are
            ignored (0 in the official configs). 1 means global attention.
        alpha: share of the heads that are Lo-Fi (pooled, global) heads.
        mlp_ratio: ConvFFN hidden channels / channels.
        qkv_bias: bias in HiLo's q/k/v projections.
        mask_padding: keep HiLo's padding out of the softmax and the pooling (False: official numerics).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout after HiLo and inside the ConvFFNs.
        attn_drop_rate: attention dropout.
        drop_path_rate: stochastic depth, linear over all blocks (ImageNet recipe: S 0.2, M 0.3, B 0.5).
        norm_layer: norm over the channels of a channels-last map.
    """

    _family = "LITv2"
    _nhwc_stages = True

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] | None = None,
        head_dim: int = 32,
        attn_stages: Sequence[bool] = (False, False, True, True),
        window_sizes: int | Sequence[int] = (0, 0, 2, 1),
        alpha: float = 0.9,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        mask_padding: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: type[nn.Module] = _layer_norm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        dims = [embed_dim * 2**i for i in range(num_stages)]
        num_heads = heads_per_stage(num_heads, dims, head_dim, "LITv2")
        attn_stages = per_stage(attn_stages, num_stages, "attn_stages", "LITv2")
        window_sizes = per_stage(window_sizes, num_stages, "window_sizes", "LITv2")
        for i in range(num_stages):
            if attn_stages[i] and window_sizes[i] < 1:
                raise ValueError(f"LITv2: stage {i} has attention and needs window_sizes[{i}] >= 1, got {window_sizes}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dim = dims
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, dims[0], min_input_size=4 * 2 ** (num_stages - 1), norm_layer=norm_layer, **dd)
        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        stages = []
        for i in range(num_stages):
            # deformable token merging starts the stage, as in timm (the official code ends the previous one with it)
            downsample = DeformableTokenMerging(dims[i - 1], dims[i], **dd) if i > 0 else None
            ffn_kwargs = dict(mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate, norm_layer=norm_layer, **dd)
            if attn_stages[i]:
                hilo_kwargs = dict(
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    alpha=alpha,
                    qkv_bias=qkv_bias,
                    mask_padding=mask_padding,
                    attn_drop=attn_drop_rate,
                )
                blocks = [HiLoBlock(dims[i], drop_path=dp, **hilo_kwargs, **ffn_kwargs) for dp in drop_paths[i]]
            else:
                blocks = [ConvFFNBlock(dims[i], drop_path=dp, **ffn_kwargs) for dp in drop_paths[i]]
            stages.append(Stage(downsample, blocks))
        self.feature_info = stage_feature_info(dims)
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        for module in self.modules():
            _init_weights(module)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse)

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load a released ziplab/LITv2 file (timm ``custom_load``); a classifier of another size keeps its init,
        a stem for other than 3 input channels gets timm's adapted weights."""
        sd = checkpoint_filter_fn(_load_official_file(checkpoint_path), self)
        if sd["stem.proj.weight"].shape[1] != self.in_chans:  # as timm does for other input channel counts
            sd["stem.proj.weight"] = adapt_input_conv(self.in_chans, sd["stem.proj.weight"])
        for k, v in self.state_dict().items():
            if k.startswith("head.fc.") and (k not in sd or sd[k].shape != v.shape):
                sd[k] = v
        load_checkpoint(self, sd, strict=True, filter_fn=lambda state_dict, model: state_dict)

    def forward_features(self, x: Tensor) -> Tensor:
        """Final features, NCHW (a view of the channels-last map)."""
        x = self.stages(self.stem(x))
        return self.norm(x).permute(0, 3, 1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    # As the official code: Linear trunc-normal(.02) with zero bias, the ConvFFN depthwise conv N(0, sqrt(2/9));
    # the patch conv and the deformable convs keep their PyTorch-style init, offsets start at zero.
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, ConvFFN):
        module.init_dwconv()


class _Stub:
    """Stands in for a pickled object whose class cannot be imported (e.g. the yacs config in Swin-style files)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _Stub


def _load_official_file(path: str) -> Any:
    """Read a released file: tensors only when possible; otherwise (a Swin-style training checkpoint with its
    config and optimizer) a full unpickling in which classes that cannot be imported become stubs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        tolerant = types.SimpleNamespace(Unpickler=_TolerantUnpickler, load=pickle.load, __name__="pickle")
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=tolerant)


_OFFICIAL_RENAMES = (
    (r"^patch_embed\.", "stem."),
    # official token merging closes stage i; ours opens stage i + 1
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample."),
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"\.downsample\.dconv\.", ".downsample.conv."),
    (r"\.downsample\.norm_layer\.", ".downsample.norm."),
    (r"\.attn\.h_(qkv|proj)\.", r".attn.hifi_\1."),
    (r"\.attn\.l_(q|kv|proj)\.", r".attn.lofi_\1."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: LITv2) -> dict[str, Tensor]:
    """Map the official ziplab/LITv2 layout onto ours (our own layout passes through).

    ``patch_embed`` -> ``stem``; ``layers.i.blocks.j`` -> ``stages.i.blocks.j``; ``layers.i.downsample.{dconv,
    norm_layer}`` -> ``stages.{i+1}.downsample.{conv,norm}``; ``attn.h_*`` / ``attn.l_*`` -> ``attn.hifi_*`` /
    ``attn.lofi_*``; ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``; the single norm of an attention-free block,
    ``norm2``, -> ``norm``; ``head`` -> ``head.fc``. The per-output norms of the official detection /
    segmentation backbones (``norm0``..``norm3``) are dropped (the mm adapter loads them itself), and so is the
    classifier when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if "patch_embed.proj.weight" in state_dict:
        blocks_with_attn = {m[1] for k in state_dict if (m := re.match(r"^(layers\.\d+\.blocks\.\d+)\.norm1\.", k))}
        out = {}
        for k, v in state_dict.items():
            if re.match(r"^norm\d+\.", k):
                continue
            m = re.match(r"^(layers\.\d+\.blocks\.\d+)\.norm2\.", k)
            if m and m[1] not in blocks_with_attn:
                k = k.replace(".norm2.", ".norm.", 1)
            out[rename_key(k, _OFFICIAL_RENAMES)] = v
        state_dict = out
    return drop_absent_classifier(state_dict, model)


def _create_litv2(variant: str, pretrained: bool = False, **kwargs: Any) -> LITv2:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_model_with_cfg(
        LITv2,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,  # official eval: resize to 256, centre crop 224
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.proj",
        "classifier": "head.fc",
        "custom_load": True,  # Swin-style training checkpoints ({'model': ..., 'config': ...}): LITv2.load_pretrained
        **kwargs,
    }


# Released ImageNet-1k weights (ziplab/LITv2 README, GitHub release v1.0). top-1: S 82.0, M 83.3, B 83.6, B-384 84.7.
_RELEASE = "https://github.com/ziplab/LITv2/releases/download/v1.0/"
# No hub mirror yet: once a folder written by tools/convert_weights.py is published, name it in the tag's cfg
# (hf_hub_id="ORG/NAME"); pretrained=True then tries it before the official URL.
default_cfgs = generate_default_cfgs(
    {
        "litv2_small.in1k": _cfg(url=_RELEASE + "litv2_s.pth"),
        "litv2_medium.in1k": _cfg(url=_RELEASE + "litv2_m.pth"),
        "litv2_base.in1k": _cfg(url=_RELEASE + "litv2_b.pth"),
        # fine-tuned at 384 and evaluated on a direct 384x384 resize (no crop)
        "litv2_base.in1k_384": _cfg(
            url=_RELEASE + "litv2_b_384.pth", input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0
        ),
    }
)


@register_model
def litv2_small(pretrained: bool = False, **kwargs: Any) -> LITv2:
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), head_dim=32, alpha=0.9, window_sizes=(0, 0, 2, 1))
    return _create_litv2("litv2_small", pretrained, **dict(model_args, **kwargs))


@register_model
def litv2_medium(pretrained: bool = False, **kwargs: Any) -> LITv2:
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), head_dim=32, alpha=0.9, window_sizes=(0, 0, 2, 1))
    return _create_litv2("litv2_medium", pretrained, **dict(model_args, **kwargs))


@register_model
def litv2_base(pretrained: bool = False, **kwargs: Any) -> LITv2:
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), head_dim=32, alpha=0.9, window_sizes=(0, 0, 2, 1))
    return _create_litv2("litv2_base", pretrained, **dict(model_args, **kwargs))


def _global_attention_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._litv2_reference import global_attention_litv2

    return global_attention_litv2(name, **kwargs)


# tools/benchmark.py --compare: the same network with plain global attention in place of HiLo
register_reference("litv2_*", _global_attention_reference, "global-attn")
