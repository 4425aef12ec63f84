"""MoH-TransNeXt (MoH-ViT): official checkpoint layout and counts, agreement with the official formulation.

The official layout is TransNeXt's (``official_state_dict`` of tests/transnext_official_layout.py, written from the
official module structure) plus the routers of SkyworkAI/MoH MoH-ViT/attention*.py: in every attention, ``wg``
(h - S x C) where heads are routed, ``wg_0`` (2 x C) where there are both shared and routed heads, ``wg_1`` (S x C)
where S > 1; no biases. The parameter counts are those of the official classes (tests/model_specs.py).
"""

from __future__ import annotations

import pytest
import timm
import torch
from model_specs import PUBLISHED_PARAMS
from transnext_official_layout import official_state_dict

import backbones
from backbones.models._transnext_reference import create_official_style
from backbones.models.moh_transnext import MOH_ARCHS, checkpoint_filter_fn

# official (shared_head, routed_head) per stage
OFFICIAL = {
    "moh_transnext_small_75": ((72, 144, 288, 576), (5, 5, 22, 5), (3, 6, 12, 24), (3, 6, 3, 4), (0, 0, 6, 12)),
    "moh_transnext_small_80": ((72, 144, 288, 576), (5, 5, 22, 5), (3, 6, 12, 24), (3, 6, 3, 8), (0, 0, 6, 12)),
    "moh_transnext_base_50": ((96, 192, 384, 768), (5, 5, 23, 5), (4, 8, 16, 32), (2, 2, 2, 4), (2, 4, 6, 8)),
    "moh_transnext_base_75": ((96, 192, 384, 768), (5, 5, 23, 5), (4, 8, 16, 32), (4, 8, 4, 5), (0, 0, 8, 16)),
}
# official state-dict sizes (keys) of the four released classes
OFFICIAL_KEYS = {"moh_transnext_small_75": 1145, "moh_transnext_small_80": 1145, "moh_transnext_base_50": 1197,
                 "moh_transnext_base_75": 1177}


def official_moh_state_dict(embed_dims, depths, num_heads, shared, routed, num_classes=1000):
    sd = official_state_dict(embed_dims, depths, num_heads, num_classes=num_classes)
    g = torch.Generator().manual_seed(1)
    for s, (c, depth, h, sh, r) in enumerate(zip(embed_dims, depths, num_heads, shared, routed), 1):
        for j in range(depth):
            a = f"block{s}.{j}.attn."
            shapes = {}
            if r > 0:
                shapes[a + "wg.weight"] = (h - sh, c)
                if sh > 0:
                    shapes[a + "wg_0.weight"] = (2, c)
            if sh > 1:
                shapes[a + "wg_1.weight"] = (sh, c)
            sd.update({k: torch.randn(v, generator=g) * 0.05 for k, v in shapes.items()})
    return sd


def _moh(shared, routed):
    return tuple(dict(shared_heads=s, routed_heads=k) for s, k in zip(shared, routed))


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_layout_loads_strictly_with_the_official_counts(name):
    *arch, shared, routed = OFFICIAL[name]
    assert MOH_ARCHS[name][1:] == (shared, routed)
    sd = official_moh_state_dict(*arch, shared, routed)
    assert len(sd) == OFFICIAL_KEYS[name]
    assert sum(t.numel() for t in sd.values()) == PUBLISHED_PARAMS[name][0]
    with torch.device("meta"):
        model = timm.create_model(name)
    sd = checkpoint_filter_fn(sd, model)
    assert set(sd) == set(model.state_dict())
    bad = [k for k, v in sd.items() if v.shape != model.state_dict()[k].shape]
    assert not bad, bad[:5]


# Reduced widths with every gate form, and the small_75 layout itself in stages 3-4 (S=3 of 6 heads, top-3).
SMALL = dict(embed_dims=(16, 32, 48, 96), depths=(1, 1, 2, 1), num_heads=(2, 4, 3, 6))
SMALL_SHARED, SMALL_ROUTED = (2, 1, 0, 2), (0, 2, 2, 3)


@pytest.fixture(scope="module")
def official_small():
    return official_moh_state_dict(*SMALL.values(), SMALL_SHARED, SMALL_ROUTED)


@pytest.mark.parametrize("mode", ["extrapolate", "fixed_pool"])
def test_matches_official_formulation_at_224_and_odd_size(official_small, mode):
    kwargs = dict(SMALL, moh=_moh(SMALL_SHARED, SMALL_ROUTED))
    if mode == "fixed_pool":
        kwargs["fixed_pool_size"] = 3
    ours = backbones.create_model("moh_transnext_small_75", **kwargs).eval()
    backbones.load_checkpoint(ours, official_small, strict=True)
    ref = create_official_style("moh_transnext_small_75", **kwargs).eval()
    ref.load_state_dict(official_small, strict=True)
    for hw in ((224, 224), (197, 253)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            feats = ours.forward_intermediates(x, intermediates_only=True)
            ref_feats = ref.forward_features(x)
            out, ref_out = ours(x), ref(x)
        for f, r in zip(feats, ref_feats):
            torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_full_size_matches_official_formulation():
    """At full depth on random weights. (B-50 routes in every stage: there some token's k-th and (k+1)-th router
    probabilities tie to ~1e-6 relative, a rounding-level difference flips that top-k choice, and the flip grows
    through the later blocks; that model is compared at reduced width above.)"""
    name = "moh_transnext_small_75"
    *arch, shared, routed = OFFICIAL[name]
    sd = official_moh_state_dict(*arch, shared, routed)
    ours = backbones.create_model(name).eval()
    backbones.load_checkpoint(ours, sd, strict=True)
    ref = create_official_style(name).eval()
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_routing_changes_the_output(official_small):
    """The routers matter: zeroing a router's logits changes the output (guards against an ignored option)."""
    kwargs = dict(SMALL, moh=_moh(SMALL_SHARED, SMALL_ROUTED))
    model = backbones.create_model("moh_transnext_small_75", **kwargs).eval()
    backbones.load_checkpoint(model, official_small, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.stages[3].blocks[0].attn.moh.wg_1.weight.zero_()
        assert not torch.allclose(model(x), before, atol=1e-5)


def test_balancing_loss_of_routed_layers_only():
    kwargs = dict(SMALL, moh=_moh(SMALL_SHARED, SMALL_ROUTED))
    model = backbones.create_model("moh_transnext_small_75", **kwargs)
    assert model.moh_aux_loss() is None and model.moh_aux_loss_weight == 0.01
    model.train()(torch.randn(2, 3, 64, 64))
    per_layer = [b.attn.moh.aux_loss for st in model.stages for b in st.blocks if b.attn.moh.aux_loss is not None]
    assert len(per_layer) == 1 + 2 + 1  # stages 2-4 route (stage 1 is all-shared)
    torch.testing.assert_close(model.moh_aux_loss(), torch.stack(per_layer).mean())
    model.moh_aux_loss().backward()
    assert model.stages[1].blocks[0].attn.moh.wg.weight.grad.abs().sum() > 0
    # plain TransNeXt: no term
    assert backbones.create_model("transnext_micro", embed_dims=(24, 48, 72, 96), depths=(1, 1, 2, 1),
                                  num_heads=(1, 2, 3, 4)).moh_aux_loss() is None


def test_pretrained_tags_record_the_hub_repositories():
    for name, repo in (("moh_transnext_small_75", "MoH-ViT-S-75"), ("moh_transnext_small_80", "MoH-ViT-S-80"),
                       ("moh_transnext_base_50", "MoH-ViT-B-50"), ("moh_transnext_base_75", "MoH-ViT-B-75")):
        cfg = timm.models.get_pretrained_cfg(f"{name}.in1k")
        assert cfg.hf_hub_id == f"Chat-UniVi/{repo}" and cfg.origin_url == "https://github.com/SkyworkAI/MoH"
        assert cfg.hf_hub_filename == f"{name}.pth"  # as the hub listings name them


def test_released_training_checkpoint_loads_as_pretrained(official_small, tmp_path):
    """The hub files are DeiT-style training checkpoints: official weights under ``model`` beside optimizer state and
    an ``argparse.Namespace`` (which a weights-only unpickler refuses)."""
    import argparse

    path = tmp_path / "moh_transnext_small_75.pth"
    torch.save({"model": official_small, "optimizer": {"state": {}, "param_groups": []}, "epoch": 299,
                "args": argparse.Namespace(model="moh_transnext_small_75", lr=1e-3)}, path)
    kwargs = dict(SMALL, moh=_moh(SMALL_SHARED, SMALL_ROUTED))
    model = timm.create_model("moh_transnext_small_75", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **kwargs)
    expected = checkpoint_filter_fn(dict(official_small), model)
    got = model.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)
