"""BiFormer: Vision Transformer with Bi-Level Routing Attention (Zhu et al., CVPR 2023, arXiv:2303.08810).

A four-stage hierarchical backbone with a two-conv stem (stride 4) and a strided 3x3 conv + BatchNorm between
stages. Every block adds a depthwise-conv position encoding, then pre-norm attention and a pre-norm MLP (ratio 3).
Stages 1-3 use bi-level routing attention (:class:`backbones.blocks.BiLevelRoutingAttention`): the map is cut
into S x S regions, each region picks its top-k regions by region-mean q/k affinity (k = 1, 4, 16 for the
released models) and its tokens attend only to those regions' tokens. Stage 4 (7 x 7 at 224) uses full
attention with LePE instead. The head is BatchNorm -> global average -> linear.

The released T/S/B weights (rayleizhu/BiFormer) load through :func:`checkpoint_filter_fn`. Differences from the
official code:

* any input size: routing regions are padded and, with ``mask_padding=True`` (default), the padding is kept out of
  routing and attention (``mask_padding=False`` gives the official auto-pad numerics); the official
  classification model refuses sizes whose stage maps are not multiples of 7 (e.g. 256 x 256);
* ``forward_intermediates`` / ``features_only`` (four NCHW maps, strides 4-32), which the official code lacks;
* the routing gathers whole region rows once and runs fused attention (see the block's docstring), instead of an
  expanded-index gather plus an explicit softmax;
* the trunk runs channels-last between blocks, not NCHW with two permutes per block.

``num_regions`` (S) is 7 for ImageNet; the official detection and segmentation code uses 16 (COCO) and 8
(ADE20K) with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, LayerScale, Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks.bilevel_routing_attention import BiLevelRoutingAttention
from ._common import (
    StagedModelMixin,
    check_input,
    drop_absent_classifier,
    init_linear_trunc_normal,
    load_checkpoint,
    per_stage,
    rename_key,
    stage_group_matcher,
    unwrap_state_dict,
)
from ._stage import ConvNormDownsample, Stage, stage_drop_path_rates, stage_feature_info

__all__ = ["BiFormer", "checkpoint_filter_fn", "biformer_tiny", "biformer_small", "biformer_base"]

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # eps of every block norm in the released models


class AttentionLePE(nn.Module):
    """Full multi-head self-attention plus a depthwise conv of the *input* (LePE), channels-last.

    y = proj(MHSA(x) + DWConv(x)); used by BiFormer's last stage (official ``AttentionLePE``: qkv without bias,
    8 heads whatever the width, scale head_dim^-0.5). Input and output (B, H, W, C).
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = False, lepe_kernel_size: int = 5, device=None, dtype=None
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.lepe = (
            nn.Conv2d(dim, dim, lepe_kernel_size, padding=lepe_kernel_size // 2, groups=dim, **dd)
            if lepe_kernel_size > 0
            else None
        )
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h * w, 3, self.num_heads, c // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, c)  # (B, heads, N, d) -> (B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


class BiFormerBlock(nn.Module):
    """Conv position encoding, then pre-norm attention and MLP residual branches; channels-last (B, H, W, C).

    x = x + DWConv3x3(x);  x = x + ls1(attn(norm1(x)));  x = x + ls2(mlp(norm2(x))).
    ``topk=None`` gives full attention with LePE (the official ``topk=-2``), otherwise bi-level routing attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        topk: int | None = 4,
        num_regions: int = 7,
        qk_dim: int | None = None,
        mlp_ratio: float = 3.0,
        pos_kernel_size: int = 3,
        lepe_kernel_size: int = 5,
        global_num_heads: int = 8,
        mask_padding: bool = True,
        layer_scale_init_value: float | None = None,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = _LayerNorm,
        device=None,
        dtype=None,
        **attn_kwargs: Any,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.pos_embed = (
            nn.Conv2d(dim, dim, pos_kernel_size, padding=pos_kernel_size // 2, groups=dim, **dd)
            if pos_kernel_size > 0
            else None
        )
        self.norm1 = norm_layer(dim, **dd)
        if topk is None:
            self.attn = AttentionLePE(dim, global_num_heads, lepe_kernel_size=lepe_kernel_size, **dd)
        else:
            self.attn = BiLevelRoutingAttention(
                dim,
                num_heads,
                num_regions=num_regions,
                topk=topk,
                qk_dim=qk_dim,
                lepe_kernel_size=lepe_kernel_size,
                mask_padding=mask_padding,
                **attn_kwargs,
                **dd,
            )
        self.ls1 = LayerScale(dim, layer_scale_init_value, **dd) if layer_scale_init_value else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, **dd)
        self.ls2 = LayerScale(dim, layer_scale_init_value, **dd) if layer_scale_init_value else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_embed is not None:  # NHWC -> NCHW view (channels-last memory) for the conv, and back
            x = x + self.pos_embed(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class Stem(nn.Module):
    """Two 3x3 stride-2 convs with BatchNorm (GELU between): stride 4, ceil(H / 4) x ceil(W / 4) output."""

    def __init__(self, in_chans: int, out_chs: int, min_input_size: int = 32, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chans = in_chans
        self.min_input_size = min_input_size
        self.conv1 = nn.Conv2d(in_chans, out_chs // 2, 3, stride=2, padding=1, **dd)
        self.norm1 = nn.BatchNorm2d(out_chs // 2, **dd)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1, **dd)
        self.norm2 = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "BiFormer")
        x = x.contiguous(memory_format=torch.channels_last)
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class BiFormer(StagedModelMixin, nn.Module):
    """BiFormer (see the module docstring).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        depths: blocks per stage.
        embed_dims: channels per stage.
        head_dim: channels per head of the routing attention (heads = qk_dim // head_dim).
        qk_dims: q/k width per stage (default: the stage width).
        topks: routed regions per stage; ``None`` for full attention with LePE (the released models' stage 4).
        num_regions: routing regions per side S (7 for ImageNet, 16 for COCO and 8 for ADE20K in the official code).
        mlp_ratio: MLP hidden channels / channels.
        pos_kernel_size: depthwise position-encoding conv before each block's attention (0: none).
        lepe_kernel_size: depthwise conv on v (routing) or on x (full attention).
        global_num_heads: heads of the full-attention stage.
        mask_padding: keep region padding out of routing and attention (``False``: official numerics).
        kv_downsample_mode, kv_per_region, kv_downsample_ratios: k/v pooling inside regions (see the block);
            ``kv_downsample_ratios`` has one value per stage.
        layer_scale_init_value: LayerScale init (None: no LayerScale, as all released models).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """

    _family = "BiFormer"

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (4, 4, 18, 4),
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        head_dim: int = 32,
        qk_dims: Sequence[int] | None = None,
        topks: Sequence[int | None] = (1, 4, 16, None),
        num_regions: int = 7,
        mlp_ratio: float = 3.0,
        pos_kernel_size: int = 3,
        lepe_kernel_size: int = 5,
        global_num_heads: int = 8,
        mask_padding: bool = True,
        kv_downsample_mode: str = "identity",
        kv_per_region: int = 4,
        kv_downsample_ratios: Sequence[int] = (4, 2, 1, 1),
        layer_scale_init_value: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(depths)
        embed_dims = per_stage(embed_dims, num_stages, "embed_dims", "BiFormer")
        qk_dims = per_stage(qk_dims or embed_dims, num_stages, "qk_dims", "BiFormer")
        topks = per_stage(topks, num_stages, "topks", "BiFormer")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dims = tuple(embed_dims)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, embed_dims[0], min_input_size=4 * 2 ** (num_stages - 1), **dd)
        drop_paths = stage_drop_path_rates(drop_path_rate, depths)
        stages = []
        for i in range(num_stages):
            block_kwargs = dict(
                num_heads=qk_dims[i] // head_dim,
                topk=topks[i],
                num_regions=num_regions,
                qk_dim=qk_dims[i],
                mlp_ratio=mlp_ratio,
                pos_kernel_size=pos_kernel_size,
                lepe_kernel_size=lepe_kernel_size,
                global_num_heads=global_num_heads,
                mask_padding=mask_padding,
                layer_scale_init_value=layer_scale_init_value,
            )
            if kv_downsample_mode != "identity":
                block_kwargs.update(
                    kv_downsample_mode=kv_downsample_mode,
                    kv_per_region=kv_per_region,
                    kv_downsample_ratio=kv_downsample_ratios[i],
                )
            stages.append(
                Stage(
                    ConvNormDownsample(embed_dims[i - 1], embed_dims[i], **dd) if i > 0 else None,
                    [BiFormerBlock(embed_dims[i], drop_path=dp, **block_kwargs, **dd) for dp in drop_paths[i]],
                    permute_in=True,  # NCHW downsampling, channels-last blocks
                    permute_out=True,
                )
            )
        self.feature_info = stage_feature_info(embed_dims)
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(self.num_features, **dd)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # as the official code

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse)

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load released weights (timm ``custom_load``); a classifier of another size keeps its initialisation."""
        sd = checkpoint_filter_fn(torch.load(checkpoint_path, map_location="cpu", weights_only=False), self)
        for k, v in self.state_dict().items():
            if k.startswith("head.fc.") and (k not in sd or sd[k].shape != v.shape):
                sd[k] = v
        load_checkpoint(self, sd, strict=True, filter_fn=lambda state_dict, model: state_dict)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


_OFFICIAL_RENAMES = (
    (r"^downsample_layers\.0\.0\.", "stem.conv1."),
    (r"^downsample_layers\.0\.1\.", "stem.norm1."),
    (r"^downsample_layers\.0\.3\.", "stem.conv2."),
    (r"^downsample_layers\.0\.4\.", "stem.norm2."),
    (r"^downsample_layers\.(\d+)\.0\.", r"stages.\1.downsample.conv."),
    (r"^downsample_layers\.(\d+)\.1\.", r"stages.\1.downsample.norm."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.attn\.qkv\.qkv\.", ".attn.qkv."),  # routing stages: fused q|k|v inside a QKVLinear wrapper
    (r"\.attn\.wo\.", ".attn.proj."),
    (r"\.attn\.router\.emb\.", ".attn.routing_proj."),
    (r"\.mlp\.0\.", ".mlp.fc1."),  # official MLP: Sequential(Linear, Identity, GELU, Linear)
    (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"\.gamma([12])$", r".ls\1.gamma"),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: BiFormer) -> dict[str, Tensor]:
    """Map the official rayleizhu/BiFormer layout onto ours (our own layout passes through).

    ``downsample_layers.0.*`` -> ``stem.*``, ``downsample_layers.i.*`` -> ``stages.i.downsample.*``,
    ``stages.i.j.*`` -> ``stages.i.blocks.j.*``, ``attn.qkv.qkv`` -> ``attn.qkv``, ``attn.wo`` -> ``attn.proj``,
    ``mlp.0/3`` -> ``mlp.fc1/fc2``, ``head`` -> ``head.fc``. The dense-prediction wrapper's ``extra_norms`` are
    dropped, and so is the classifier when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith("downsample_layers.") for k in state_dict):
        out = {}
        for k, v in state_dict.items():
            if k.startswith("extra_norms."):
                continue
            out[rename_key(k, _OFFICIAL_RENAMES)] = v
        state_dict = out
    return drop_absent_classifier(state_dict, model)


def _create_biformer(variant: str, pretrained: bool = False, **kwargs: Any) -> BiFormer:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (4, 4, 18, 4))))))
    return build_model_with_cfg(
        BiFormer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(url: str | tuple[str, str] = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
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


# Released weights (official README / models/biformer.py at rayleizhu/BiFormer 1697bbb). Every OneDrive URL ends
# in ".../root/content", so each gets its own cache file name and is loaded by BiFormer.load_pretrained.
_ONEDRIVE = "https://api.onedrive.com/v1.0/shares/{}/root/content"
# No hub mirror yet: once a folder written by tools/convert_weights.py is published, name it in the tag's cfg
# (hf_hub_id="ORG/NAME"); pretrained=True then tries it before the official URL.
default_cfgs = generate_default_cfgs(
    {
        "biformer_tiny.in1k": _cfg(
            url=(_ONEDRIVE.format("s!AkBbczdRlZvChHEOoGkgwgQzEDlM"), "biformer_tiny_in1k.pth"), custom_load=True
        ),
        "biformer_small.in1k": _cfg(
            url=(_ONEDRIVE.format("s!AkBbczdRlZvChHDyM-x9KWRBZ832"), "biformer_small_in1k.pth"), custom_load=True
        ),
        "biformer_base.in1k": _cfg(
            url=(_ONEDRIVE.format("s!AkBbczdRlZvChHI_XPhoadjaNxtO"), "biformer_base_in1k.pth"), custom_load=True
        ),
    }
)


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    model_args = dict(depths=(2, 2, 8, 2), embed_dims=(64, 128, 256, 512), topks=(1, 4, 16, None))
    return _create_biformer("biformer_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    model_args = dict(depths=(4, 4, 18, 4), embed_dims=(64, 128, 256, 512), topks=(1, 4, 16, None))
    return _create_biformer("biformer_small", pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs: Any) -> BiFormer:
    model_args = dict(depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768), topks=(1, 4, 16, None))
    return _create_biformer("biformer_base", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._biformer_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official formulation (expanded-index gather, explicit softmax, NCHW trunk).
register_reference("biformer_*", _official_reference, "official-gather")
