"""TransNeXt: official checkpoint layout, agreement with the official formulation, modes, sizes, autocast.

timm has no TransNeXt, so the model is checked against (a) an official-layout state dict whose keys and shapes
are written out here from the official repository's module structure, and (b) the clean-room rewrite of the
official unfold-based formulation in ``backbones.models._transnext_reference`` (tokens as sequences, unfold,
concatenated softmax, unique-table CPB with F.interpolate resizing), loaded with that same state dict.
"""

from __future__ import annotations

import pytest
import timm
import torch
from transnext_official_layout import official_state_dict

import backbones
from backbones.models._transnext_reference import create_official_style
from backbones.models.transnext import checkpoint_filter_fn

SMALL = dict(embed_dims=(24, 48, 72, 96), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def official_small():
    return official_state_dict(**SMALL)


def test_official_layout_of_tiny_loads_strictly_with_published_key_count():
    sd = official_state_dict((72, 144, 288, 576), (2, 2, 15, 2), (3, 6, 12, 24))
    assert len(sd) == 617  # official transnext_tiny state dict
    assert sum(t.numel() for t in sd.values()) == 28_258_960
    with torch.device("meta"):
        model = timm.create_model("transnext_tiny")
    sd = checkpoint_filter_fn(sd, model)
    assert set(sd) == set(model.state_dict())
    bad = [k for k, v in sd.items() if v.shape != model.state_dict()[k].shape]
    assert not bad, bad[:5]


def test_reference_has_the_official_layout(official_small):
    ref = create_official_style("transnext_tiny", **SMALL)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {
        k: tuple(v.shape) for k, v in official_small.items()
    }


MODES = {
    "extrapolate": dict(),
    "interpolate": dict(pos_bias_mode="interpolate", img_size=160),
    "fixed_pool": dict(fixed_pool_size=3),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_matches_official_formulation_at_224_and_non_square(official_small, mode):
    kwargs = dict(SMALL, **MODES[mode])
    ours = backbones.create_model("transnext_tiny", **kwargs).eval()
    backbones.load_checkpoint(ours, official_small, strict=True)
    ref = create_official_style("transnext_tiny", **kwargs).eval()
    ref.load_state_dict(official_small, strict=True)
    for hw in ((224, 224), (197, 253)):
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            feats = ours.forward_intermediates(x, intermediates_only=True)
            ref_feats = ref.forward_features(x)
            out, ref_out = ours(x), ref(x)
        for f, r in zip(feats, ref_feats):
            torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)


def test_full_size_micro_matches_official_formulation():
    sd = official_state_dict((48, 96, 192, 384), (2, 2, 15, 2), (2, 4, 8, 16))
    ours = backbones.create_model("transnext_micro").eval()
    backbones.load_checkpoint(ours, sd, strict=True)
    ref = create_official_style("transnext_micro").eval()
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_modes_agree_at_img_size_and_differ_elsewhere(official_small):
    models = {}
    for mode in ("extrapolate", "interpolate"):
        models[mode] = backbones.create_model("transnext_tiny", pos_bias_mode=mode, img_size=192, **SMALL).eval()
        backbones.load_checkpoint(models[mode], official_small)
    with torch.no_grad():
        x = torch.randn(1, 3, 192, 192)
        torch.testing.assert_close(models["extrapolate"](x), models["interpolate"](x))
        x = torch.randn(1, 3, 256, 160)
        assert not torch.allclose(models["extrapolate"](x), models["interpolate"](x), atol=1e-4)


def test_dense_checkpoint_backbone_and_headless_model(official_small):
    model = backbones.create_model("transnext_tiny", num_classes=0, **SMALL)
    wrapped = {"state_dict": {f"backbone.{k}": v for k, v in official_small.items() if not k.startswith("head")}}
    wrapped["state_dict"]["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    backbones.load_checkpoint(model, wrapped, strict=True)
    backbones.load_checkpoint(model, official_small, strict=True)  # the classifier is dropped


def test_no_weight_decay_follows_official_keywords():
    model = backbones.create_model("transnext_tiny", **SMALL)
    names = model.no_weight_decay()
    assert "stages.0.blocks.0.attn.query_embedding" in names
    assert "stages.3.blocks.0.attn.cpb_fc2.weight" in names
    assert "stages.2.blocks.1.attn.temperature" in names
    assert "stages.0.blocks.0.attn.relative_pos_bias_local" in names
    assert not any("learnable" in n for n in names)  # decayed in the official recipe


def test_pretrained_tags_record_official_urls():
    tags = timm.list_pretrained("transnext_*")
    assert set(tags) == {
        "transnext_micro.in1k",
        "transnext_tiny.in1k",
        "transnext_small.in1k",
        "transnext_small.in1k_384",
        "transnext_base.in1k",
        "transnext_base.in1k_384",
    }
    cfg = timm.models.get_pretrained_cfg("transnext_base.in1k_384")
    assert cfg.url == (
        "https://huggingface.co/DaiShiResearch/transnext-base-384-1k-ft-1k/resolve/main/transnext_base_384_1k_ft_1k.pth"
    )
    assert cfg.input_size == (3, 384, 384)


@pytest.mark.parametrize(
    "dtype,mode",
    [
        (torch.bfloat16, "extrapolate"),
        (torch.bfloat16, "interpolate"),
        # fp16 runs slowly on CPU; the mode the detection configs use.
        pytest.param(torch.float16, "interpolate", marks=pytest.mark.slow),
    ],
)
def test_autocast_at_detection_size_is_finite(dtype, mode):
    kwargs = dict(embed_dims=(24, 48, 72, 96), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4))
    if mode == "interpolate":
        kwargs.update(pos_bias_mode="interpolate", img_size=800)  # as the Mask R-CNN configs
    model = backbones.create_model("transnext_tiny", num_classes=0, **kwargs).eval()
    x = torch.randn(1, 3, 800, 1333)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(200, 334), (100, 167), (50, 84), (25, 42)]
    assert all(torch.isfinite(f).all() for f in feats)


def test_inference_mode_first_then_training():
    """Geometry cached under torch.inference_mode must stay usable by autograd (both implementations)."""
    x = torch.randn(1, 3, 96, 136)  # a size no other test uses, so the caches are filled here
    for model in (backbones.create_model("transnext_tiny", **SMALL), create_official_style("transnext_tiny", **SMALL)):
        with torch.inference_mode():
            model.eval()(x)
        model.train()(x).sum().backward()


@pytest.mark.parametrize("mode", ["extrapolate", "interpolate"])
def test_forward_on_the_meta_device(mode):
    """tools/model_table.py counts FLOPs with the model and input on the meta device (default device 'meta')."""
    with torch.device("meta"):
        model = backbones.create_model("transnext_tiny", pos_bias_mode=mode, img_size=160, **SMALL)
        out = model(torch.empty(1, 3, 96, 112))
    assert out.shape == (1, 1000) and out.device.type == "meta"
