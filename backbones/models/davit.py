"""DaViT: Dual Attention Vision Transformers (Ding et al., ECCV 2022, arXiv:2204.03645), and the DaViT image
towers of Florence-2 (Xiao et al., CVPR 2024, arXiv:2311.06242).

A four-stage hierarchical backbone whose blocks come in pairs: a spatial block (multi-head self-attention inside
non-overlapping 7x7 windows, :class:`backbones.blocks.WindowAttention`) and a channel block (attention among the
channels of each group over all tokens, :class:`backbones.blocks.ChannelAttention`), both linear in the number
of tokens. Each block has two residual depthwise-conv position encodings (before the attention and before the
MLP) and no other positional information, so there are no tables to resize and any input size works. Stem: 7x7
stride-4 conv then LayerNorm; later stages open with LayerNorm then a 2x2 stride-2 conv (3x3 for Florence-2).

Drop-in for timm's ``DaVit`` (same names, pretrained tags, constructor arguments, state-dict keys and outputs),
with these differences:

* the blocks run channels-last (B, H, W, C) between the stage boundaries; stage outputs are ordinary NCHW-shaped
  tensors (with channels-last strides);
* the channel-attention logits and softmax are computed in fp32 under autocast (they sum over all tokens and
  overflow fp16 on detection-size inputs);
* a clear error for input of the wrong shape or smaller than one stem patch (4 x 4);
* :func:`checkpoint_filter_fn` also takes the official dingmyu/davit detection/segmentation checkpoints
  (``backbone.`` keys next to neck and head keys).

Every stride rounds up (the stem pads to a multiple of 4, each 2x2 downsample to a multiple of 2), so an H x W
input gives ceil(H / 4) x ceil(W / 4), ..., ceil(H / 32) x ceil(W / 32) maps.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ClassifierHead,
    DropPath,
    Mlp,
    NormMlpClassifierHead,
    calculate_drop_path_rates,
    get_norm_layer,
    register_notrace_function,
)
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs
from torch import Tensor, nn

from .._registry import register_model
from ..blocks._windows import pad_to_multiple
from ..blocks.channel_attention import ChannelAttention
from ..blocks.conv_pos_enc import ConvPosEnc
from ..blocks.window_attention import WindowAttention
from ._common import (
    StagedModelMixin,
    check_input,
    init_linear_trunc_normal,
    rename_key,
    stage_group_matcher,
    unwrap_state_dict,
)

__all__ = [
    "DaVit",
    "checkpoint_filter_fn",
    "davit_tiny",
    "davit_small",
    "davit_base",
    "davit_large",
    "davit_huge",
    "davit_giant",
    "davit_base_fl",
    "davit_huge_fl",
]


@register_notrace_function  # reason: the dtype test is control flow on Proxies (FX wraps public names only)
def add_residual(branch: Tensor, x: Tensor) -> Tensor:
    """``x + branch``, written into ``branch`` (a fresh tensor no backward needs) when the dtypes agree.

    Under autocast the branch is low precision and the residual stream fp32: then the sum is a new fp32 tensor.
    """
    return branch.add_(x) if branch.dtype == x.dtype else x + branch


class Stem(nn.Module):
    """Pad to a multiple of 4, 7x7 stride-4 conv, LayerNorm over the output channels. NCHW in, NCHW out."""

    def __init__(
        self,
        in_chs: int = 3,
        out_chs: int = 96,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chs = in_chs
        self.stride = 4
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=7, stride=self.stride, padding=3, **dd)
        self.norm = norm_layer(out_chs, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chs, self.stride, "DaVit")
        x = pad_to_multiple(x, self.stride, channels_last=False)
        x = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """LayerNorm over the input channels, then a stride-2 conv. NCHW in, NCHW out.

    Even kernels (2x2) see the map zero-padded right/bottom to a multiple of the kernel (after the norm, as in
    timm and the official code); odd kernels (Florence-2's 3x3) use padding k // 2. Both give ceil(H / 2).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 2,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.even_kernel = kernel_size % 2 == 0
        self.norm = norm_layer(in_chs, **dd)
        padding = 0 if self.even_kernel else kernel_size // 2
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=kernel_size, stride=2, padding=padding, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        if self.even_kernel:
            x = pad_to_multiple(x, self.conv.kernel_size)
        return self.conv(x.permute(0, 3, 1, 2))


class DaVitBlock(nn.Module):
    """One half of a dual block: spatial (window) or channel attention, then an MLP; channels-last.

    x = cpe1(x);  x = x + drop_path(attn(norm1(x)));  x = cpe2(x);  x = x + drop_path(mlp(norm2(x)))
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_type: str = "spatial",
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        ffn: bool = True,
        cpe_act: bool = False,
        channel_attn_v2: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.cpe1 = ConvPosEnc(dim, kernel_size=3, act=cpe_act, **dd)
        self.norm1 = norm_layer(dim, **dd)
        if attn_type == "spatial":
            self.attn = WindowAttention(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias, **dd)
        elif attn_type == "channel":
            # as many channel groups as spatial heads (DaViT's choice)
            self.attn = ChannelAttention(dim, num_groups=num_heads, qkv_bias=qkv_bias, v2=channel_attn_v2, **dd)
        else:
            raise ValueError(f"attn_type must be 'spatial' or 'channel', got {attn_type!r}")
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.cpe2 = ConvPosEnc(dim, kernel_size=3, act=cpe_act, **dd)
        if ffn:
            self.norm2 = norm_layer(dim, **dd)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, **dd)
            self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        else:
            self.norm2 = self.mlp = self.drop_path2 = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.cpe1(x)
        x = add_residual(self.drop_path1(self.attn(self.norm1(x))), x)
        x = self.cpe2(x)
        if self.mlp is not None:
            x = add_residual(self.drop_path2(self.mlp(self.norm2(x))), x)
        return x


class DaVitStage(nn.Module):
    """Optional :class:`Downsample`, then ``depth`` dual blocks (spatial then channel by default). NCHW in and out.

    Dual block ``j`` is ``blocks.j``, an ``nn.Sequential`` of its halves, indexed ``0``/``1`` or, with
    ``named_blocks`` (Florence-2 towers), ``spatial_block``/``channel_block``, as in timm's state dicts.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int = 1,
        downsample: bool = True,
        attn_types: Sequence[str] = ("spatial", "channel"),
        num_heads: int = 3,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rates: Sequence[float] = (0.0,),
        norm_layer: type[nn.Module] = nn.LayerNorm,
        ffn: bool = True,
        cpe_act: bool = False,
        down_kernel_size: int = 2,
        named_blocks: bool = False,
        channel_attn_v2: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        if downsample:
            self.downsample = Downsample(in_chs, out_chs, down_kernel_size, norm_layer=norm_layer, **dd)
        else:
            self.downsample = nn.Identity()
        blocks = []
        for j in range(depth):
            halves = [
                (
                    f"{attn_type}_block",
                    DaVitBlock(
                        out_chs,
                        num_heads,
                        attn_type=attn_type,
                        window_size=window_size,
                        mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias,
                        drop_path=drop_path_rates[j],  # one rate per dual block, as timm
                        norm_layer=norm_layer,
                        ffn=ffn,
                        cpe_act=cpe_act,
                        channel_attn_v2=channel_attn_v2,
                        **dd,
                    ),
                )
                for attn_type in attn_types
            ]
            blocks.append(
                nn.Sequential(OrderedDict(halves)) if named_blocks else nn.Sequential(*[b for _, b in halves])
            )
        self.blocks = nn.Sequential(*blocks)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)  # (B, H, W, C), a view of channels-last memory
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class DaVit(StagedModelMixin, nn.Module):
    """Dual Attention Vision Transformer (timm-compatible; see the module docstring for what differs).

    Args:
        in_chans: image channels.
        depths: dual blocks per stage.
        embed_dims: channels per stage.
        num_heads: spatial heads per stage (= channel groups).
        window_size: spatial attention window side.
        mlp_ratio: MLP hidden channels / channels.
        qkv_bias: bias in the qkv projections.
        norm_layer: norm of the classifier head (and of ``norm_pre`` with ``head_norm_first``); NCHW.
        norm_layer_cl: channels-last norm of the blocks, the stem and the downsamples.
        norm_eps: epsilon of every norm.
        attn_types: order of the halves of a dual block.
        ffn: give every half an MLP.
        cpe_act: GELU inside the conv position encodings.
        down_kernel_size: downsample conv kernel (2; Florence-2: 3).
        channel_attn_v2: Florence-2 channel attention (standard roles, scale N^-0.5).
        named_blocks: name the halves ``spatial_block``/``channel_block`` instead of ``0``/``1`` (Florence-2 keys).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linear over dual blocks (both halves of one share the rate, as timm).
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        head_norm_first: norm then pool (``norm_pre``) instead of pool then norm (DaViT's head).
    """

    _family = "DaVit"
    _norm_attr = "norm_pre"

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (1, 1, 3, 1),
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: str | type[nn.Module] = "layernorm2d",
        norm_layer_cl: str | type[nn.Module] = "layernorm",
        norm_eps: float = 1e-5,
        attn_types: Sequence[str] = ("spatial", "channel"),
        ffn: bool = True,
        cpe_act: bool = False,
        down_kernel_size: int = 2,
        channel_attn_v2: bool = False,
        named_blocks: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        global_pool: str = "avg",
        head_norm_first: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        num_stages = len(embed_dims)
        if not num_stages == len(num_heads) == len(depths):
            raise ValueError(
                f"depths, embed_dims and num_heads need one value per stage, got {tuple(depths)}, "
                f"{tuple(embed_dims)}, {tuple(num_heads)}"
            )
        norm_layer = partial(get_norm_layer(norm_layer), eps=norm_eps)
        norm_layer_cl = partial(get_norm_layer(norm_layer_cl), eps=norm_eps)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.embed_dims = tuple(embed_dims)
        self.num_features = embed_dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, embed_dims[0], norm_layer=norm_layer_cl, **dd)
        drop_path_rates = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        stages, self.feature_info = [], []
        for i in range(num_stages):
            stages.append(
                DaVitStage(
                    embed_dims[max(i - 1, 0)],
                    embed_dims[i],
                    depth=depths[i],
                    downsample=i > 0,
                    attn_types=attn_types,
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path_rates=drop_path_rates[i],
                    norm_layer=norm_layer_cl,
                    ffn=ffn,
                    cpe_act=cpe_act,
                    down_kernel_size=down_kernel_size,
                    named_blocks=named_blocks,
                    channel_attn_v2=channel_attn_v2,
                    **dd,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        if head_norm_first:  # norm -> pool -> fc
            self.norm_pre = norm_layer(self.num_features, **dd)
            self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        else:  # pool -> norm -> fc, DaViT's head
            self.norm_pre = nn.Identity()
            self.head = NormMlpClassifierHead(
                self.num_features,
                num_classes,
                pool_type=global_pool,
                drop_rate=drop_rate,
                norm_layer=norm_layer,
                **dd,
            )
        self.head_hidden_size = self.head.num_features
        self.apply(init_linear_trunc_normal)  # as timm

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse, "norm_pre")

    def _run_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(stage, x)
        return stage(x)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.norm_pre(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# (pattern, replacement) applied in order to every key of an official dingmyu/davit checkpoint
_OFFICIAL_KEYS = (
    (r"^patch_embeds\.0\.proj\.", "stem.conv."),
    (r"^patch_embeds\.0\.norm\.", "stem.norm."),
    (r"^patch_embeds\.(\d+)\.proj\.", r"stages.\1.downsample.conv."),
    (r"^patch_embeds\.(\d+)\.norm\.", r"stages.\1.downsample.norm."),
    (r"^main_blocks\.(\d+)\.", r"stages.\1.blocks."),
    (r"\.cpe\.0\.", ".cpe1."),
    (r"\.cpe\.1\.", ".cpe2."),
    (r"^norms\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)

# the same for a Florence-2 checkpoint's image tower, once its 'vision_tower.' prefix is removed
_FLORENCE2_KEYS = (
    (r"^convs\.0\.proj\.", "stem.conv."),
    (r"^convs\.0\.norm\.", "stem.norm."),
    (r"^convs\.(\d+)\.proj\.", r"stages.\1.downsample.conv."),
    (r"^convs\.(\d+)\.norm\.", r"stages.\1.downsample.norm."),
    (r"^blocks\.(\d+)\.", r"stages.\1.blocks."),
    (r"\.conv1\.fn\.dw\.", ".cpe1.proj."),
    (r"\.conv2\.fn\.dw\.", ".cpe2.proj."),
    (r"\.(window|channel)_attn\.norm\.", ".norm1."),
    (r"\.(window|channel)_attn\.fn\.", ".attn."),
    (r"\.ffn\.norm\.", ".norm2."),
    (r"\.ffn\.fn\.net\.", ".mlp."),
)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: DaVit) -> dict[str, Tensor]:
    """Map a DaViT checkpoint onto ``model``'s keys. Layouts taken (no tensor needs reshaping in any of them):

    * timm's / ours (``stem.conv.weight``): passed through;
    * official dingmyu/davit classification (``patch_embeds``, ``main_blocks``, ``cpe.0``, ``norms``, ``head``);
    * official dingmyu/davit detection/segmentation: the same under ``backbone.``, next to neck/head keys, with
      per-output norms ``norm0``..``norm3`` (dropped: the classification model has none; the mm adapter adds its
      own);
    * a Florence-2 checkpoint (``vision_tower.convs.0.proj.weight``): the image tower's keys are renamed, every
      other key (language model, projections) is dropped. The tower has no classifier, so the head's keys are
      filled from ``model``'s own initial values (a strict load then works; as in timm the head norm is
      untrained, use these models as feature extractors).
    """
    state_dict = unwrap_state_dict(state_dict)
    if "stem.conv.weight" in state_dict:
        return state_dict
    if "vision_tower.convs.0.proj.weight" in state_dict:
        tower = {k[len("vision_tower.") :]: v for k, v in state_dict.items() if k.startswith("vision_tower.")}
        out = {rename_key(k, _FLORENCE2_KEYS): v for k, v in tower.items()}
        for k, v in model.state_dict().items():
            if k.startswith("head.") and k not in out:
                out[k] = v
        return out
    if "backbone.patch_embeds.0.proj.weight" in state_dict:
        state_dict = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    state_dict = {k: v for k, v in state_dict.items() if not re.match(r"norm\d+\.", k)}
    return {rename_key(k, _OFFICIAL_KEYS): v for k, v in state_dict.items()}


def _create_davit(variant: str, pretrained: bool = False, **kwargs: Any) -> DaVit:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (1, 1, 3, 1))))))
    strict = kwargs.pop("pretrained_strict", True)
    if variant.endswith("_fl"):
        strict = False  # Florence-2 towers ship without a classifier
    return build_model_with_cfg(
        DaVit,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        pretrained_strict=strict,
        **kwargs,
    )


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "head.fc",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        # official weights of dingmyu/davit, converted by timm
        "davit_tiny.msft_in1k": _cfg(hf_hub_id="timm/"),
        "davit_small.msft_in1k": _cfg(hf_hub_id="timm/"),
        "davit_base.msft_in1k": _cfg(hf_hub_id="timm/"),
        "davit_large": _cfg(),
        "davit_huge": _cfg(),
        "davit_giant": _cfg(),
        # Florence-2 image towers, loaded from the full Florence-2 checkpoints
        "davit_base_fl.msft_florence2": _cfg(
            hf_hub_id="microsoft/Florence-2-base", num_classes=0, input_size=(3, 768, 768)
        ),
        "davit_huge_fl.msft_florence2": _cfg(
            hf_hub_id="microsoft/Florence-2-large", num_classes=0, input_size=(3, 768, 768)
        ),
    }
)

_florence2 = dict(window_size=12, down_kernel_size=3, channel_attn_v2=True, named_blocks=True)


@register_model
def davit_tiny(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 3, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
    return _create_davit("davit_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_small(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 9, 1), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
    return _create_davit("davit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_base(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32))
    return _create_davit("davit_base", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_large(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 9, 1), embed_dims=(192, 384, 768, 1536), num_heads=(6, 12, 24, 48))
    return _create_davit("davit_large", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_huge(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64))
    return _create_davit("davit_huge", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_giant(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(depths=(1, 1, 12, 3), embed_dims=(384, 768, 1536, 3072), num_heads=(12, 24, 48, 96))
    return _create_davit("davit_giant", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_base_fl(pretrained: bool = False, **kwargs: Any) -> DaVit:
    model_args = dict(_florence2, depths=(1, 1, 9, 1), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32))
    return _create_davit("davit_base_fl", pretrained, **dict(model_args, **kwargs))


@register_model
def davit_huge_fl(pretrained: bool = False, **kwargs: Any) -> DaVit:
    # the "huge" tower is the image encoder of Florence-2-large
    model_args = dict(_florence2, depths=(1, 1, 9, 1), embed_dims=(256, 512, 1024, 2048), num_heads=(8, 16, 32, 64))
    return _create_davit("davit_huge_fl", pretrained, **dict(model_args, **kwargs))
