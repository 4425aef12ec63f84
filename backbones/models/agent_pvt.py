"""Agent-PVT (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024,
arXiv:2312.08874): PVT v1 with agent attention in every block.

Four stages; each starts with a strided patch embedding (4x4 / 4 conv, then 2x2 / 2 convs, each + LayerNorm) and
adds a learned absolute position embedding sized to the 224 input's stage map, then pre-norm blocks of agent
attention (:class:`backbones.blocks.AgentAttention`, registry name ``agent``; 3x3 / 4x4 / 7x7 / 7x7 agents, no
spatial reduction in the released models) and a GELU MLP. There is no final norm: the head is a global average and
a linear classifier.

The released weights (LeapLabTHU/Agent-Attention, TsinghuaCloud) load through :func:`checkpoint_filter_fn`, both the
classification files and the backbones of the dense models. Differences from the official code:

* any input size with one code path: the official classifier keeps the agent row / column biases sized to the 224
  grid (it fails elsewhere), its dense copy resizes every bias to the map and the agent grid (``agent_shapes``, the
  official ``downstream_agent_shapes``); ours does the latter, which at the trained size and agent grid is exactly the
  classifier (every resize is the identity; tested against both);
* the patch embeddings zero-pad the map to a multiple of their stride (the official convs floor and drop the last
  rows / columns); at sizes that are multiples of 32 the two agree;
* ``forward_intermediates`` / ``features_only`` (four NCHW maps, strides 4-32) and ``mixers=`` (any registry mixer
  per stage).

Speed against the official formulation (``tools/benchmark.py agent_pvt_tiny --compare --mode both --threads 1
--repeats 20``: CPU, one thread, fp32, batch 8 at 224, median of 20 repeats, ours and the reference alternating
repeat by repeat, 2026-12-04 on a shared 2-core machine under load from other jobs, so the ratio means more than the
times): ours takes 478 ms per inference batch against 485 ms (1.01x, a tie; 1.03x in a 10-repeat run) and 1.23 s per
training step against 1.30 s (1.06x; 1.07x). Inference cannot gain much here: a profile of both puts ~60% of the time
in the token projections and MLPs (addmm) and ~15% in GELU, the same work in both; the agent attention itself is a
small share at 224. No GPU timing yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (
    ClassifierHead,
    DropPath,
    Mlp,
    calculate_drop_path_rates,
    register_notrace_function,
    trunc_normal_,
)
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks._windows import pad_to_multiple
from ..blocks.mixer_registry import create_mixer
from ._common import (
    StagedModelMixin,
    check_input,
    drop_absent_classifier,
    init_linear_trunc_normal,
    per_stage,
    rename_key,
    unwrap_state_dict,
)

__all__ = ["AgentPVT", "checkpoint_filter_fn", "agent_pvt_tiny", "agent_pvt_small", "agent_pvt_medium",
           "agent_pvt_large"]  # fmt: skip

_BlockNorm = partial(nn.LayerNorm, eps=1e-6)  # the blocks' norms; the patch embeddings keep the default 1e-5


class PatchEmbed(nn.Module):
    """k x k / k conv + LayerNorm: NCHW in, channels-last out; the map is zero-padded to a multiple of k first."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.stride = stride
        self.proj = nn.Conv2d(in_chs, out_chs, stride, stride=stride, **dd)
        self.norm = nn.LayerNorm(out_chs, **dd)  # eps 1e-5, as the official PatchEmbed

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, self.stride, channels_last=False)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


# reason: the trained-size shortcut is control flow on the map size (public name: FX does not autowrap _names)
@register_notrace_function
def add_pos_embed(x: Tensor, pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """x (B, H, W, C) + the (1, H0 * W0, C) table resized bilinearly to (H, W) (align_corners=False, as the official
    ``_get_pos_embed``)."""
    size = (x.shape[1], x.shape[2])
    table = pos_embed.reshape(1, grid[0], grid[1], -1)
    if not torch.jit.is_scripting() and not torch.compiler.is_compiling() and tuple(size) == tuple(grid):
        return x + table
    table = F.interpolate(table.permute(0, 3, 1, 2), size=size, mode="bilinear")
    return x + table.permute(0, 2, 3, 1)


class AgentPVTBlock(nn.Module):
    """x + Mixer(LN(x)), then x + MLP(LN(x)); (B, H, W, C) in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str = "agent",
        mixer_kwargs: dict[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = _BlockNorm(dim, **dd)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}), **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = _BlockNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        # the MLP on a 2-D (tokens, C) view: one plain matmul per layer (faster on CPU than the 4-D map)
        return x + self.drop_path2(self.mlp(self.norm2(x).flatten(0, -2)).view(x.shape))


class AgentPVTStage(nn.Module):
    """Patch embedding, + position embedding (resized to the map), blocks; NCHW in and out."""

    def __init__(
        self,
        in_chs: int,
        dim: int,
        depth: int,
        stride: int,
        grid: tuple[int, int],
        num_heads: int,
        mixer: str = "agent",
        mixer_kwargs: dict[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        drop_path: Sequence[float] = (),
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.grid = grid
        self.downsample = PatchEmbed(in_chs, dim, stride, **dd)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim, **dd))  # official (1, N0, C) layout
        self.blocks = nn.ModuleList(
            AgentPVTBlock(dim, num_heads, mixer, mixer_kwargs, mlp_ratio, drop_path[i], **dd) for i in range(depth)
        )
        trunc_normal_(self.pos_embed, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)  # (B, H, W, C)
        x = add_pos_embed(x, self.pos_embed, self.grid)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
        return x.permute(0, 3, 1, 2)


class AgentPVT(StagedModelMixin, nn.Module):
    """Agent-PVT (see the module docstring).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        img_size: the training input side; position embeddings and agent biases are sized to its stage maps.
        depths: blocks per stage.
        embed_dims: channels per stage.
        num_heads: heads per stage.
        mlp_ratios: MLP hidden channels / channels, per stage.
        agent_nums: trained agents per stage (squares: a p x p grid).
        agent_shapes: agent grid used at run time per stage (None: the trained p x p; the official dense models use
            (12, 12), (16, 16), (28, 28), (28, 28)).
        sr_ratios: spatial reduction of keys / values per stage (1 in every released model).
        mixers: a registry mixer per stage (agent options are passed to ``agent`` stages only).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """

    _family = "AgentPVT"
    _stem_attr = None
    _norm_attr = None

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        img_size: int | tuple[int, int] = 224,
        depths: Sequence[int] = (2, 2, 2, 2),
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] | int = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] | float = (8, 8, 4, 4),
        agent_nums: Sequence[int] | int = (9, 16, 49, 49),
        agent_shapes: Sequence[tuple[int, int] | None] | None = None,
        sr_ratios: Sequence[int] | int = 1,
        mixers: Sequence[str] | str = "agent",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        n = len(depths)
        embed_dims = per_stage(embed_dims, n, "embed_dims", "AgentPVT")
        num_heads = per_stage(num_heads, n, "num_heads", "AgentPVT")
        mlp_ratios = per_stage(mlp_ratios, n, "mlp_ratios", "AgentPVT")
        agent_nums = per_stage(agent_nums, n, "agent_nums", "AgentPVT")
        agent_shapes = (None,) * n if agent_shapes is None else per_stage(agent_shapes, n, "agent_shapes", "AgentPVT")
        sr_ratios = per_stage(sr_ratios, n, "sr_ratios", "AgentPVT")
        mixers = per_stage(mixers, n, "mixers", "AgentPVT")
        img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        self.min_input_size = 4 * 2 ** (n - 1)

        drop_paths = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages, self.feature_info, first, reduction = [], [], 0, 1
        for i in range(n):
            stride = 4 if i == 0 else 2
            reduction *= stride
            grid = (img_h // reduction, img_w // reduction)  # the official num_patches of each stage
            kwargs = None
            if mixers[i] == "agent":
                kwargs = dict(train_grid=grid, agent_num=agent_nums[i], sr_ratio=sr_ratios[i])
                if agent_shapes[i] is not None:
                    kwargs["agent_shape"] = tuple(agent_shapes[i])
            stages.append(
                AgentPVTStage(
                    in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], depths[i], stride, grid, num_heads[i],
                    mixers[i], kwargs, mlp_ratios[i], drop_paths[first: first + depths[i]], **dd,
                )
            )  # fmt: skip
            first += depths[i]
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(embed_dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(init_linear_trunc_normal)  # as the official code

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        if coarse:
            return dict(stem=r"^stages\.0\.(?:downsample|pos_embed)", blocks=r"^stages\.(\d+)")
        blocks = [(r"^stages\.(\d+)\.(?:downsample|pos_embed)", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None)]
        return dict(stem=r"^stages\.0\.(?:downsample|pos_embed)", blocks=blocks)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # as the official model (it decays the position embeddings and the agent biases)

    def forward_intermediates(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        x = check_input(x, self.in_chans, self.min_input_size, "AgentPVT")
        return super().forward_intermediates(x, *args, **kwargs)

    def forward_features(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size, "AgentPVT")
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


_OFFICIAL_RENAMES = (
    (r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample."),
    (r"^pos_embed(\d)$", lambda m: f"stages.{int(m.group(1)) - 1}.pos_embed"),
    (r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}."),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: AgentPVT) -> dict[str, Tensor]:
    """Map the official LeapLabTHU/Agent-Attention Agent-PVT layout onto ours (our own layout passes through).

    ``patch_embed{i}`` -> ``stages.{i-1}.downsample``, ``pos_embed{i}`` -> ``stages.{i-1}.pos_embed``,
    ``block{i}.{j}`` -> ``stages.{i-1}.blocks.{j}``, ``head`` -> ``head.fc``; block keys (``norm1``, ``attn.q``,
    ``attn.kv``, ``attn.proj``, ``attn.dwc``, the six agent biases, ``norm2``, ``mlp.fc1/fc2``) are the same. The
    dense backbones (mmdet / mmseg ``AgentPVT``, under ``backbone.``) have the same keys without the head, which is
    dropped too when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith(("patch_embed1.", "block1.")) for k in state_dict):
        state_dict = {rename_key(k, _OFFICIAL_RENAMES): v for k, v in state_dict.items()}
    return drop_absent_classifier(state_dict, model)


def _create_agent_pvt(variant: str, pretrained: bool = False, **kwargs: Any) -> AgentPVT:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 2, 2))))))
    if "img_size" not in kwargs:  # a tag trained at another size (in1k_256) sizes its tables to that input
        kwargs["img_size"] = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg")).input_size[-2:]
    return build_model_with_cfg(
        AgentPVT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(key: str = "", file_name: str = "", **kwargs: Any) -> dict[str, Any]:
    # TsinghuaCloud share links have no file name in their path: (url, name) tells timm / the cache what to call the
    # download (the name the official README has the files renamed to, {MODEL_STRUCTURE}_max_acc.pth)
    return {
        "url": (f"https://cloud.tsinghua.edu.cn/f/{key}/?dl=1", file_name) if key else "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stages.0.downsample.proj",
        "classifier": "head.fc",
        "license": "unknown (LeapLabTHU/Agent-Attention has no LICENSE file)",
        **kwargs,
    }


# Released ImageNet-1k weights: LeapLabTHU/Agent-Attention agent_transformer/README.md (207ce3e), TsinghuaCloud.
default_cfgs = generate_default_cfgs(
    {
        "agent_pvt_tiny.in1k": _cfg("13fdf0e0a7c5498c934f", "agent_pvt_t_max_acc.pth"),
        "agent_pvt_small.in1k": _cfg("36b8be9a8863456685a3", "agent_pvt_s_max_acc.pth"),
        "agent_pvt_medium.in1k": _cfg("4d00ecacf18b45f9b88c", "agent_pvt_m_max_acc.pth"),
        # trained at 256 (its position embeddings and agent biases are sized to the 256 grid: img_size=256)
        "agent_pvt_medium.in1k_256": _cfg(
            "654df734121643b19c52",
            "agent_pvt_m_256_max_acc.pth",
            input_size=(3, 256, 256),
            pool_size=(8, 8),
            crop_pct=1.0,
        ),
        "agent_pvt_large.in1k": _cfg("040cfe0cfbbe4762ad09", "agent_pvt_l_max_acc.pth"),
    }
)


@register_model
def agent_pvt_tiny(pretrained: bool = False, **kwargs: Any) -> AgentPVT:
    model_args = dict(depths=(2, 2, 2, 2), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
    return _create_agent_pvt("agent_pvt_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_small(pretrained: bool = False, **kwargs: Any) -> AgentPVT:
    model_args = dict(depths=(3, 4, 6, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
    return _create_agent_pvt("agent_pvt_small", pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_medium(pretrained: bool = False, **kwargs: Any) -> AgentPVT:
    model_args = dict(depths=(3, 4, 18, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
    return _create_agent_pvt("agent_pvt_medium", pretrained, **dict(model_args, **kwargs))


@register_model
def agent_pvt_large(pretrained: bool = False, **kwargs: Any) -> AgentPVT:
    model_args = dict(depths=(3, 8, 27, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
    return _create_agent_pvt("agent_pvt_large", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._agent_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official formulation ((B, N, C) tokens, per-forward bias tables with the batch
# repeats, nn.AdaptiveAvgPool2d agents, explicit softmax attentions).
register_reference("agent_pvt_*", _official_reference, "official-tokens")
