"""Agent-Swin (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024,
arXiv:2312.08874): Swin Transformer with agent attention in its early blocks.

The Swin trunk (4x4 patch embedding + LayerNorm, four stages joined by 2x2 patch merging, a final LayerNorm, average
pooling and a linear head) with two kinds of block, both pre-norm with a GELU MLP:

* agent blocks: :class:`backbones.blocks.AgentAttention` (registry name ``agent``) over the whole stage map. The
  official classifier sets its agent "window" to 56, which every released stage map (56, 28, 14, 7 at 224) fits in,
  so these blocks are global and never shifted; 3x3 / 4x4 / 7x7 / 7x7 agents;
* Swin blocks: 7x7 window attention with a relative position bias, shifted by 3 in every other block
  (:class:`backbones.blocks.ShiftedWindowAttention`, ``swin``, timm's ``WindowAttention`` inside).

The first ``agent_depths[i]`` blocks of stage i are agent blocks (official attention types: tiny ``AAAB`` = 2, 2, 6, 0;
small ``AABB`` = 2, 2, 0, 0; base ``AAMB2`` = 2, 2, 2, 0). Stages are timm's layout (``stages.i.downsample`` is timm's
:class:`~timm.models.swin_transformer.PatchMerging`, at the start of the stage).

The released weights (LeapLabTHU/Agent-Attention, TsinghuaCloud) load through :func:`checkpoint_filter_fn`, both the
classification files and the dense backbones. Differences from the official code:

* any input size with one code path, the one of the official dense copy: agent biases are resized to the map and
  the agent grid (``agent_shapes``; the official detection / segmentation configs use 9x9, 12x12, 14x14, 7x7), maps
  are padded to the window (before the shift) and to even sizes before merging. At 224 with the trained agent grids
  this is exactly the classifier (tested against both). One rule differs from the dense copy: a map that fits in one
  window is not shifted (the classifier's rule; the dense copy would roll a 7x7 stage-4 map onto itself);
* the agent blocks' fused ``qkv`` is split into ``q`` and ``kv`` on loading (one agent attention for PVT and Swin);
* ``forward_intermediates`` / ``features_only`` (four maps, strides 4-32; the dense copy's per-output LayerNorms
  ``norm0..3`` are the mm adapter's ``out_norms``).

Speed against the official formulation (``tools/benchmark.py agent_swin_tiny --compare --mode both --threads 1``:
CPU, one thread, fp32, batch 8 at 224, median of 10 repeats, ours and the reference alternating repeat by repeat,
2026-12-04 on a shared 2-core machine under load 4-5 from other jobs, so the ratio means more than the times): ours
takes 1.06 s per inference batch against 1.16 s (1.10x faster) and 3.27 s per training step against 3.45 s (1.05x).
No GPU timing yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, Mlp, calculate_drop_path_rates, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs
from timm.models._builder import resolve_pretrained_cfg
from timm.models.swin_transformer import PatchMerging
from torch import Tensor, nn

from .._bench import register_reference
from .._registry import register_model
from ..blocks._windows import pad_to_multiple
from ..blocks.mixer_registry import create_mixer
from ._common import (
    StagedModelMixin,
    check_input,
    drop_absent_classifier,
    per_stage,
    rename_key,
    stage_group_matcher,
    unwrap_state_dict,
)

__all__ = ["AgentSwin", "checkpoint_filter_fn", "agent_swin_tiny", "agent_swin_small", "agent_swin_base"]


class PatchEmbed(nn.Module):
    """4x4 / 4 conv + LayerNorm: NCHW image in, (B, H/4, W/4, C) out; the image is zero-padded to a multiple of 4."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_chans, self.patch_size = in_chans, patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size, **dd)
        self.norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, 32, "AgentSwin")
        x = pad_to_multiple(x, self.patch_size, channels_last=False)  # as the official dense PatchEmbed
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class AgentSwinBlock(nn.Module):
    """x + Mixer(LN(x)), then x + MLP(LN(x)); (B, H, W, C) in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str,
        mixer_kwargs: dict[str, Any],
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.attn = create_mixer(mixer, dim, num_heads, **mixer_kwargs, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        # the MLP on a 2-D (tokens, C) view: one plain matmul per layer (faster on CPU than the 4-D map)
        return x + self.drop_path2(self.mlp(self.norm2(x).flatten(0, -2)).view(x.shape))


class AgentSwinStage(nn.Module):
    """Optional patch merging, then blocks; channels-last (B, H, W, C) in and out."""

    def __init__(
        self,
        in_chs: int,
        dim: int,
        blocks: Sequence[tuple[str, dict[str, Any]]],
        num_heads: int,
        downsample: bool,
        mlp_ratio: float = 4.0,
        drop_path: Sequence[float] = (),
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.grad_checkpointing = False
        self.downsample = PatchMerging(in_chs, dim, **dd) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            AgentSwinBlock(dim, num_heads, mixer, kw, mlp_ratio, drop_path[j], **dd)
            for j, (mixer, kw) in enumerate(blocks)
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
        return x


class AgentSwin(StagedModelMixin, nn.Module):
    """Agent-Swin (see the module docstring).

    Args:
        in_chans: image channels.
        num_classes: classifier outputs (0: no classifier).
        global_pool: head pooling type.
        img_size: the training input side; the agent biases are sized to its stage maps.
        embed_dim: channels of stage 1 (doubled per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        agent_depths: agent blocks at the start of each stage (the rest are shifted-window blocks).
        agent_nums: trained agents per stage (squares).
        agent_shapes: agent grid used at run time per stage (None: the trained p x p).
        window_size: window of the shifted-window blocks (official: max(7, 56 // 8) = 7).
        mlp_ratio: MLP hidden channels / channels.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
    """

    _family = "AgentSwin"
    _nhwc_stages = True

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        img_size: int | tuple[int, int] = 224,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] | int = (3, 6, 12, 24),
        agent_depths: Sequence[int] = (2, 2, 6, 0),
        agent_nums: Sequence[int] | int = (9, 16, 49, 49),
        agent_shapes: Sequence[tuple[int, int] | None] | None = None,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        n = len(depths)
        num_heads = per_stage(num_heads, n, "num_heads", "AgentSwin")
        agent_depths = per_stage(agent_depths, n, "agent_depths", "AgentSwin")
        agent_nums = per_stage(agent_nums, n, "agent_nums", "AgentSwin")
        agent_shapes = (None,) * n if agent_shapes is None else per_stage(agent_shapes, n, "agent_shapes", "AgentSwin")
        img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else img_size
        dims = [embed_dim * 2**i for i in range(n)]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False

        self.stem = PatchEmbed(in_chans, embed_dim, **dd)
        drop_paths = calculate_drop_path_rates(drop_path_rate, sum(depths))
        stages, self.feature_info, first = [], [], 0
        for i in range(n):
            if not 0 <= agent_depths[i] <= depths[i]:
                raise ValueError(f"AgentSwin: agent_depths[{i}] must be in 0..depths[{i}] = {depths[i]}, "
                                 f"got {agent_depths[i]}")  # fmt: skip
            reduction = 4 * 2**i
            agent = dict(train_grid=(img_h // reduction, img_w // reduction), agent_num=agent_nums[i])
            if agent_shapes[i] is not None:
                agent["agent_shape"] = tuple(agent_shapes[i])
            blocks = [
                ("agent", agent) if j < agent_depths[i]
                # official shift: window // 2 in odd blocks, counted over the stage's blocks (agent blocks included)
                else ("swin", dict(window_size=window_size, shift_size=window_size // 2 if j % 2 else 0))
                for j in range(depths[i])
            ]  # fmt: skip
            stages.append(
                AgentSwinStage(
                    dims[max(i - 1, 0)], dims[i], blocks, num_heads[i], i > 0, mlp_ratio,
                    drop_paths[first: first + depths[i]], **dd,
                )
            )  # fmt: skip
            first += depths[i]
            self.feature_info.append(dict(num_chs=dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1], **dd)
        self.head = ClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.apply(_init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return stage_group_matcher(coarse, "norm")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # the official classifier decays everything but absolute_pos_embed, which it does not use

    def forward_features(self, x: Tensor) -> Tensor:
        """Final features, NCHW (a view of the channels-last map)."""
        x = self.stages(self.stem(x))
        return self.norm(x).permute(0, 3, 1, 2)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    # As the official code: Linear weights trunc-normal(.02) with zero biases; convs keep PyTorch's default.
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_OFFICIAL_RENAMES = (
    (r"^patch_embed\.", "stem."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),  # end -> next start
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"^head\.", "head.fc."),
)


def checkpoint_filter_fn(state_dict: dict[str, Any], model: AgentSwin) -> dict[str, Tensor]:
    """Map the official LeapLabTHU/Agent-Attention Agent-Swin layout onto ours (our own layout passes through).

    ``patch_embed`` -> ``stem``; ``layers.i.blocks`` -> ``stages.i.blocks``; the end-of-stage ``layers.i.downsample``
    -> ``stages.(i+1).downsample`` (same ``norm`` / ``reduction``, the same 2x2 concatenation order as timm's);
    ``head`` -> ``head.fc``. The agent blocks' fused ``attn.qkv`` (3C, C) is split into ``attn.q`` (C rows) and
    ``attn.kv``; the Swin blocks keep theirs. The ``relative_position_index`` / ``attn_mask`` buffers (recomputed
    here) and the dense backbones' per-output norms ``norm0..2`` are dropped (their ``norm3``, a LayerNorm on the
    last stage as the classifier's ``norm``, becomes ``norm``), and so is the classifier when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if not any(k.startswith(("patch_embed.", "layers.")) for k in state_dict):
        return drop_absent_classifier(state_dict, model)
    agent_blocks = {k.rsplit(".attn.", 1)[0] for k in state_dict if k.endswith(".attn.an_bias")}
    last = len(model.stages) - 1
    if "norm.weight" not in state_dict:  # a dense backbone: its last per-output norm is the final norm's role
        state_dict = {re.sub(rf"^norm{last}\.", "norm.", k): v for k, v in state_dict.items()}
    out = {}
    for k, v in state_dict.items():
        if k.endswith((".relative_position_index", ".attn_mask")) or re.match(r"norm\d\.", k):
            continue
        block, _, param = k.rpartition(".attn.qkv.")
        if block in agent_blocks:  # agent attention: one fused qkv in Agent-Swin, q and kv in ours (and Agent-PVT)
            c = v.shape[0] // 3
            out[rename_key(f"{block}.attn.q.{param}", _OFFICIAL_RENAMES)] = v[:c]
            out[rename_key(f"{block}.attn.kv.{param}", _OFFICIAL_RENAMES)] = v[c:]
            continue
        out[rename_key(k, _OFFICIAL_RENAMES)] = v
    return drop_absent_classifier(out, model)


def _create_agent_swin(variant: str, pretrained: bool = False, **kwargs: Any) -> AgentSwin:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    if "img_size" not in kwargs:  # a tag trained at another size (in1k_288, in1k_384) sizes its biases to it
        kwargs["img_size"] = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg")).input_size[-2:]
    return build_model_with_cfg(
        AgentSwin,
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
        "first_conv": "stem.proj",
        "classifier": "head.fc",
        "license": "unknown (LeapLabTHU/Agent-Attention has no LICENSE file)",
        **kwargs,
    }


# Released ImageNet-1k weights: LeapLabTHU/Agent-Attention agent_transformer/README.md (207ce3e), TsinghuaCloud. The
# 288 / 384 fine-tunes (configs WINDOW_SIZE 72 / 96: again the whole stage-1 map) size their agent biases to that
# input (img_size follows the tag) and were evaluated without a centre crop (TEST.CROP False).
default_cfgs = generate_default_cfgs(
    {
        "agent_swin_tiny.in1k": _cfg("a2ddc1190c224f768a41", "agent_swin_t_max_acc.pth"),
        "agent_swin_small.in1k": _cfg("f607172c9fea4d6e99bb", "agent_swin_s_max_acc.pth"),
        "agent_swin_small.in1k_288": _cfg("09760394e93b4046a25e", "agent_swin_s_288_max_acc.pth",
                                          input_size=(3, 288, 288), pool_size=(9, 9), crop_pct=1.0),
        "agent_swin_base.in1k": _cfg("4fcd2d0114bb490483c3", "agent_swin_b_max_acc.pth"),
        "agent_swin_base.in1k_384": _cfg("bb84ee9058954706a557", "agent_swin_b_384_max_acc.pth",
                                         input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    }
)  # fmt: skip


@register_model
def agent_swin_tiny(pretrained: bool = False, **kwargs: Any) -> AgentSwin:
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), agent_depths=(2, 2, 6, 0))
    return _create_agent_swin("agent_swin_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_small(pretrained: bool = False, **kwargs: Any) -> AgentSwin:
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), agent_depths=(2, 2, 0, 0))
    return _create_agent_swin("agent_swin_small", pretrained, **dict(model_args, **kwargs))


@register_model
def agent_swin_base(pretrained: bool = False, **kwargs: Any) -> AgentSwin:
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), agent_depths=(2, 2, 2, 0))
    return _create_agent_swin("agent_swin_base", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any) -> nn.Module:
    from ._agent_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official formulation ((B, N, C) tokens, fused qkv, per-forward bias tables with
# the batch repeats, precomputed shift masks, explicit softmax attentions).
register_reference("agent_swin_*", _official_reference, "official-tokens")
