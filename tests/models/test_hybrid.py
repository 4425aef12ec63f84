"""HybridNet: the mixers= forms, the stage input handed to decoupled mixers, and the whole forward against a
functional re-statement of the architecture (the contract suite covers the timm API of every named hybrid)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import backbones  # noqa: F401  (registers the models)
from backbones.blocks import DecoupledAttention, GlobalAttention, StaticMixer
from backbones.models.hybrid import HybridNet, resolve_mixers

SMALL = dict(embed_dims=(16, 32, 48, 64), head_dim=8)


def test_mixers_forms():
    depths = (2, 2, 6, 2)
    issue_example = resolve_mixers(("focal", "focal", ["halo", "global"] * 3, "global"), depths)
    assert issue_example == (("focal",) * 2, ("focal",) * 2, ("halo", "global") * 3, ("global",) * 2)
    assert resolve_mixers("global", depths) == tuple(("global",) * d for d in depths)
    pattern = resolve_mixers("focal | dwconv*2+pool | halo+global | static", (2, 3, 6, 2))
    assert pattern == (("focal",) * 2, ("dwconv", "dwconv", "pool"), ("halo", "global") * 3, ("static",) * 2)
    assert resolve_mixers(("routed", "halo+global", ["linear", "global"], "pool"), (1, 3, 2, 1))[1] == (
        "halo", "global", "halo")


def test_mixers_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"stage 2 is a list of 2 names for 6 blocks"):
        resolve_mixers(("focal", "focal", ["halo", "global"], "global"), (2, 2, 6, 2))
    with pytest.raises(ValueError, match=r"unknown mixer 'hallo' \(did you mean 'halo', 'hilo'\?\); known mixers:"):
        resolve_mixers("hallo", (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"has 3 '\|'-separated stages, the model 4"):
        resolve_mixers("global | global | global", (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"one entry per stage \(4\), got 2"):
        resolve_mixers(("global", "pool"), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="is not 'name\\*count'"):
        resolve_mixers("global*x", (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"num_heads=5\): num_heads must divide dim"):
        HybridNet(mixers="global", num_heads=5, depths=(1, 1, 1, 1), **SMALL)
    with pytest.raises(ValueError, match=r"unknown mixer 'routd' \(did you mean 'routed'\?\)"):
        HybridNet(mixers="routed", mixer_kwargs={"routd": {"topk": 2}}, depths=(1, 1, 1, 1), **SMALL)
    with pytest.raises(ValueError, match=r"mixer_kwargs of stage 0 set \['routed'\], which stage 0 does not use"):
        HybridNet(mixers="global|global|routed|routed", mixer_kwargs=[{"routed": {}}, {}, {}, {}], depths=(1, 1, 1, 1),
                  **SMALL)
    with pytest.raises(ValueError, match="ffn must be one of"):
        HybridNet(ffn="glu", depths=(1, 1, 1, 1), **SMALL)


def test_blocks_hold_the_requested_mixers_and_kwargs():
    model = timm.create_model(
        "hybrid_tiny", mixers=("static", "decoupled", "sigmoid+global", "routed"), depths=(1, 1, 2, 1),
        mixer_kwargs=[{}, {}, {}, {"routed": {"num_regions": 2, "topk": 3}}], **SMALL,
    )
    kinds = [[type(b.mixer).__name__ for b in s.blocks] for s in model.stages]
    assert kinds == [["StaticMixer"], ["DecoupledAttention"], ["SigmoidAttention", "GlobalAttention"],
                     ["BiLevelRoutingAttention"]]
    assert model.stages[3].blocks[0].mixer.topk == 3 and model.stages[3].blocks[0].mixer.num_heads == 8
    assert model(torch.randn(1, 3, 67, 45)).shape == (1, 1000)


def test_decoupled_mixer_gets_the_stage_input():
    model = HybridNet(mixers="decoupled", depths=(1, 2, 1, 1), num_classes=0, **SMALL).eval()
    stage = model.stages[1]
    seen = {}
    stage.downsample.register_forward_hook(lambda m, a, out: seen.update(stage_input=out))
    for i, block in enumerate(stage.blocks):
        block.mixer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.update({i: kwargs["stage_input"]}), with_kwargs=True
        )
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 40))
    assert seen[0] is seen["stage_input"] and seen[1] is seen["stage_input"]


def _layer_norm(x, m):
    return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)


def _conv_nhwc(x, conv):
    return F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, conv.stride, conv.padding, groups=conv.groups
                    ).permute(0, 2, 3, 1)


def _naive_mixer(h, mixer):
    b, hh, ww, c = h.shape
    if isinstance(mixer, GlobalAttention):
        heads, d = mixer.num_heads, c // mixer.num_heads
        qkv = h.reshape(b, -1, c) @ mixer.qkv.weight.T + mixer.qkv.bias
        q, k, v = qkv.split(c, -1)
        outs = []
        for i in range(heads):
            sl = slice(i * d, (i + 1) * d)
            outs.append(torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), -1) @ v[..., sl])
        return (torch.cat(outs, -1) @ mixer.proj.weight.T + mixer.proj.bias).view(b, hh, ww, c)
    assert isinstance(mixer, torch.nn.Identity)
    return h


def naive_hybrid(model: HybridNet, x: torch.Tensor) -> torch.Tensor:
    """The architecture as docs/hybrids.md states it, in functional ops on the model's weights."""
    stem = model.stem
    x = F.conv2d(x, stem.conv1.weight, None, 2, 1)
    x = F.batch_norm(x, stem.bn.running_mean, stem.bn.running_var, stem.bn.weight, stem.bn.bias, False, 0.0,
                     stem.bn.eps)
    x = F.conv2d(F.gelu(x), stem.conv2.weight, stem.conv2.bias, 2, 1).permute(0, 2, 3, 1)
    x = _layer_norm(x, stem.norm)
    for i, stage in enumerate(model.stages):
        if i:
            x = _conv_nhwc(_layer_norm(x, stage.downsample.norm), stage.downsample.conv)
        for block in stage.blocks:
            x = x + _naive_mixer(_layer_norm(x, block.norm1), block.mixer)
            glu = block.mlp
            a, v = (_layer_norm(x, block.norm2) @ glu.fc1.weight.T + glu.fc1.bias).chunk(2, -1)
            x = x + (F.gelu(_conv_nhwc(a, glu.dwconv)) * v) @ glu.fc2.weight.T + glu.fc2.bias
    x = _layer_norm(x, model.norm).mean((1, 2))
    return x @ model.head.fc.weight.T + model.head.fc.bias


@pytest.mark.parametrize("mixers", ["global", ("identity", "global", "identity+global", "global")])
def test_forward_matches_functional_statement(mixers):
    torch.manual_seed(0)
    model = HybridNet(mixers=mixers, depths=(1, 1, 2, 1), num_classes=5, **SMALL).double().eval()
    with torch.no_grad():
        for m in model.modules():  # non-trivial norms and statistics
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 3, 45, 38, dtype=torch.float64)
        torch.testing.assert_close(model(x), naive_hybrid(model, x))


def test_layer_scale_mlp_and_per_stage_options():
    model = HybridNet(mixers="static", depths=(1, 1, 1, 1), ffn="mlp", mlp_ratio=(2, 2, 3, 3),
                      layer_scale_init_value=1e-5, num_classes=3, **SMALL)
    block = model.stages[2].blocks[0]
    assert isinstance(block.mixer, StaticMixer)
    assert block.mlp.fc1.out_features == 3 * 48 and torch.allclose(block.ls1.gamma, torch.full((48,), 1e-5))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert "stages.0.blocks.0.mixer.position_logits" in model.no_weight_decay()


def test_named_hybrids_differ_only_in_their_mixers():
    names = backbones.list_models("hybrid_*")
    assert len(names) >= 6
    for name in names:
        with torch.device("meta"):
            model = timm.create_model(name)
        assert model.embed_dims == (64, 128, 256, 512)
        assert [len(s.blocks) for s in model.stages] == [2, 2, 6, 2]
    with torch.device("meta"):
        decoupled = timm.create_model("hybrid_tiny", mixers="decoupled")
    assert all(isinstance(b.mixer, DecoupledAttention) for s in decoupled.stages for b in s.blocks)


def test_export_with_every_new_mixer():
    """torch.export of a hybrid holding the baseline and ablation mixers (the stage input reaches decoupled)."""
    model = HybridNet(mixers="decoupled+pool | static+dwconv | sigmoid+linear | global+identity",
                      depths=(2, 2, 2, 2), num_classes=4, **SMALL).eval()
    x = torch.randn(1, 3, 45, 61)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_decoupled_stage_input_under_gradient_checkpointing():
    """Same gradients with checkpointing, and the stage input's gradient path (to the downsampling) is kept."""
    x = torch.randn(2, 3, 40, 40)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = HybridNet(mixers="decoupled", depths=(1, 2, 1, 1), num_classes=3, **SMALL)
        model.set_grad_checkpointing(ckpt)
        model(x).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0]["stages.1.blocks.1.mixer.qk.weight"].abs().sum() > 0
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
