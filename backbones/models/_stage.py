"""The stage module and constructor helpers shared by the hierarchical families (BiFormer, FocalNet, LITv2,
TransNeXt, RAVLT, HybridNet).

Every one of these families runs a stage the same way::

    x = downsample(x)                    # strided conv / token merging / patch embedding, or nothing
    x = x.permute(0, 2, 3, 1)            # only where the downsample is NCHW and the blocks are channels-last
    x = block(x[, context]) per block    # each block optionally under gradient checkpointing
    x = norm(x)                          # only TransNeXt closes a stage with a norm
    x = x.permute(0, 3, 1, 2)            # only where the stage returns NCHW from channels-last blocks

:class:`Stage` is that loop, written once; the families differ only in the modules they hand it. The state-dict
keys are the families' own: ``downsample.*``, ``blocks.N.*`` and ``norm.*`` (an absent part has none).

``context``, where given, is a parameter-free module run once on the downsampled map; its output goes to every
block as the second argument: RAVLT's rotary tables of the map (built once per stage, not once per block),
HybridNet's stage input for the ``decoupled`` mixer. Blocks of a stage without one are called as ``block(x)``.

DaViT (checkpoints whole stages, dual blocks), EfficientViT and HaloNet (timm's layouts) keep their own stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import calculate_drop_path_rates
from timm.models import checkpoint
from torch import Tensor, nn

from ._common import per_stage

__all__ = ["ConvNormDownsample", "Stage", "heads_per_stage", "stage_drop_path_rates", "stage_feature_info"]


class Stage(nn.Module):
    """Optional ``downsample``, then ``blocks`` (each under gradient checkpointing when enabled), then ``norm``.

    Args:
        downsample: run first (None: nothing).
        blocks: the stage's blocks, in order (keys ``blocks.N.*``).
        norm: run after the last block (None: nothing).
        context: parameter-free module of the downsampled map whose output every block gets as its second
            argument (None: blocks take ``x`` alone).
        permute_in: the downsample returns NCHW and the blocks take (B, H, W, C): permute between them (a
            contiguous view of a channels_last map, no copy).
        permute_out: the blocks return (B, H, W, C) and the stage NCHW: permute at the end (a view).
    """

    __constants__ = ["permute_in", "permute_out"]

    def __init__(
        self,
        downsample: nn.Module | None,
        blocks: Sequence[nn.Module],
        norm: nn.Module | None = None,
        context: nn.Module | None = None,
        permute_in: bool = False,
        permute_out: bool = False,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.permute_in = permute_in
        self.permute_out = permute_out
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.context = context
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm if norm is not None else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.permute_in:
            x = x.permute(0, 2, 3, 1).contiguous()  # a no-op on the channels_last maps the families pass
        if self.context is None:
            for block in self.blocks:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x = checkpoint(block, x)
                else:
                    x = block(x)
        else:
            context = self.context(x)
            for block in self.blocks:
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x = checkpoint(block, x, context)
                else:
                    x = block(x, context)
        x = self.norm(x)
        if self.permute_out:
            x = x.permute(0, 3, 1, 2)
        return x


class ConvNormDownsample(nn.Module):
    """3x3 stride-2 conv + BatchNorm between stages, NCHW in and out (BiFormer; RAVLT's ``PatchMerging``).

    Keys ``conv`` and ``norm``; the output is ceil(H / 2) x ceil(W / 2).
    """

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1, **dd)
        self.norm = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


def stage_drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over all blocks, split by stage."""
    return calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)


def heads_per_stage(
    num_heads: int | Sequence[int] | None, dims: Sequence[int], head_dim: int, model: str
) -> tuple[int, ...]:
    """Heads of every stage: ``num_heads`` (one value or one per stage), else channels // ``head_dim`` (>= 1)."""
    if num_heads is None:
        num_heads = [max(1, d // head_dim) for d in dims]
    return per_stage(num_heads, len(dims), "num_heads", model)


def stage_feature_info(dims: Sequence[int], first_reduction: int = 4, prefix: str = "stages") -> list[dict[str, Any]]:
    """timm ``feature_info``: stage i (``{prefix}.i``) has ``dims[i]`` channels at stride first_reduction * 2**i."""
    return [dict(num_chs=d, reduction=first_reduction * 2**i, module=f"{prefix}.{i}") for i, d in enumerate(dims)]
