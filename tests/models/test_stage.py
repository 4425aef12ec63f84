"""The shared stage (backbones/models/_stage.py): what every hierarchical family is built from, and its loop against
a plain re-statement (downsample, permutes, blocks with their context, checkpointing, closing norm)."""

from __future__ import annotations

import re

import pytest
import timm
import torch
from model_specs import small_kwargs
from torch import nn

import backbones  # noqa: F401  (registers the models)
from backbones.models._stage import ConvNormDownsample, Stage, heads_per_stage, stage_feature_info

# family -> (a model, the attribute holding its stages); DaViT, EfficientViT and HaloNet keep their own stages
FAMILIES = {
    "biformer": ("biformer_tiny", "stages"),
    "focalnet": ("focalnet_tiny_srf", "layers"),
    "litv2": ("litv2_small", "stages"),
    "transnext": ("transnext_micro", "stages"),
    "ravlt": ("ravlt_t", "stages"),
    "hybrid": ("hybrid_tiny", "stages"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_stage_is_the_shared_stage(family):
    name, attr = FAMILIES[family]
    model = timm.create_model(name, **small_kwargs(name))
    stages = getattr(model, attr)
    assert len(stages) == 4 and all(type(stage) is Stage for stage in stages)
    # the families' own key layout: stage i holds downsample.*, blocks.N.* and (TransNeXt) norm.* only
    pattern = re.compile(rf"{attr}\.\d+\.(downsample|blocks\.\d+|norm)\.")
    stage_keys = [k for k in model.state_dict() if k.startswith(f"{attr}.")]
    assert stage_keys and all(pattern.match(k) for k in stage_keys)


class _AddContext(nn.Module):
    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.scale = scale

    def forward(self, x, context=None):
        return x + self.scale * self.fc(x) + (0.0 if context is None else context.mean())


class _MeanContext(nn.Module):
    def forward(self, x):
        return x.square()


def _reference(x, downsample, blocks, norm, context, permute_in, permute_out):
    x = downsample(x)
    if permute_in:
        x = x.permute(0, 2, 3, 1)
    ctx = None if context is None else context(x)
    for block in blocks:
        x = block(x, ctx)
    x = norm(x)
    return x.permute(0, 3, 1, 2) if permute_out else x


@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_stage_runs_downsample_blocks_norm(with_context, checkpointing):
    torch.manual_seed(0)
    down = ConvNormDownsample(4, 8).eval()
    blocks = [_AddContext(8, 0.5), _AddContext(8, -0.25)]
    norm = nn.LayerNorm(8)
    context = _MeanContext() if with_context else None
    stage = Stage(down, blocks, norm=norm, context=context, permute_in=True, permute_out=True)
    stage.set_grad_checkpointing(checkpointing)
    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    out = stage(x)
    ref = _reference(x, down, blocks, norm, context, True, True)
    assert out.shape == (2, 8, 5, 4)
    torch.testing.assert_close(out, ref)
    g_out = torch.autograd.grad(out.square().sum(), [x, *stage.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *stage.parameters()])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)
    assert sorted(stage.state_dict()) == sorted(
        [f"downsample.{k}" for k in down.state_dict()]
        + [f"blocks.{i}.{k}" for i, b in enumerate(blocks) for k in b.state_dict()]
        + [f"norm.{k}" for k in norm.state_dict()]
    )


def test_stage_without_downsample_or_norm_has_no_such_keys():
    stage = Stage(None, [nn.Linear(3, 3)])
    assert sorted(stage.state_dict()) == ["blocks.0.bias", "blocks.0.weight"]


class _Scriptable(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.fc(x)


def test_stage_scripts():
    stage = Stage(ConvNormDownsample(4, 8).eval(), [_Scriptable(8)], permute_in=True, permute_out=True).eval()
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(torch.jit.script(stage)(x), stage(x))


def test_constructor_helpers():
    assert heads_per_stage(None, (16, 32, 64), 32, "M") == (1, 1, 2)
    assert heads_per_stage(4, (16, 32), 32, "M") == (4, 4)
    with pytest.raises(ValueError, match="M: num_heads needs one value per stage"):
        heads_per_stage((1, 2, 3), (16, 32), 32, "M")
    info = stage_feature_info((8, 16), first_reduction=2, prefix="layers")
    assert info == [dict(num_chs=8, reduction=2, module="layers.0"), dict(num_chs=16, reduction=4, module="layers.1")]
