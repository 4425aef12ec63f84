"""FocalNet: parity with timm's own class, official-layout loading, focal kernel/level adaptation, odd sizes."""

from __future__ import annotations

import math
import re
from unittest import mock

import pytest
import timm
import timm.models.focalnet as timm_focalnet
import torch
import torch.nn.functional as F

import backbones
from backbones.models.focalnet import FocalNet, checkpoint_filter_fn

NAMES = [f"focalnet_{size}_{rf}" for size in ("tiny", "small", "base") for rf in ("srf", "lrf")] + [
    f"focalnet_{size}_fl{levels}" for size in ("large", "xlarge", "huge") for levels in (3, 4)
]
SMALL = dict(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10)  # a 21842-class head would dominate the cost
ODD = (197, 253)


def timm_reference(name: str, **overrides) -> torch.nn.Module:
    """timm's own FocalNet for ``name`` with ``overrides`` applied.

    timm's entrypoints pass depths/embed_dim themselves (overriding them raises), so the kwargs timm's entrypoint
    hands to its builder are captured and the model is rebuilt by timm's builder with the overrides on top.
    """
    captured = {}

    def capture(variant, pretrained=False, **kwargs):
        captured.update(kwargs)

    with mock.patch.object(timm_focalnet, "_create_focalnet", capture):
        backbones.timm_original(name)(pretrained=False)
    assert captured, f"timm's {name} entrypoint did not call _create_focalnet"
    model = timm_focalnet._create_focalnet(name, pretrained=False, **{**captured, **overrides})
    assert overrides.get("features_only") or type(model) is timm_focalnet.FocalNet
    return model


def randomize_(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter so that each one (LayerScale, norms, gates) visibly matters."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def small_pairs():
    """name -> (timm model, our model with timm's weights), reduced width/depth, eval mode."""
    pairs = {}
    for name in NAMES:
        torch.manual_seed(0)
        ref = randomize_(timm_reference(name, **SMALL)).eval()
        ours = timm.create_model(name, **SMALL).eval()
        assert isinstance(ours, FocalNet)
        ours.load_state_dict(ref.state_dict(), strict=True)
        pairs[name] = ref, ours
    return pairs


# ---------------------------------------------------------------------------------------------- (i) parity
@pytest.mark.parametrize("name", NAMES)
def test_parity_with_timm_small(small_pairs, name):
    ref, ours = small_pairs[name]
    assert list(ours.state_dict()) == list(ref.state_dict())
    for hw in ((224, 224), (256, 320)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            final, inters = ours.forward_intermediates(x)
            ref_final, ref_inters = ref.forward_intermediates(x)
            for a, b in zip(inters + [final], ref_inters + [ref_final], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            logits = ref.forward_head(ref_final)
            torch.testing.assert_close(ours.forward_head(final), logits, rtol=1e-5, atol=1e-5)
        if hw == (224, 224):  # with autograd on, the blocks take their out-of-place path
            torch.testing.assert_close(ours(x).detach(), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_structure_and_cfgs_match_timm(small_pairs, name):
    ref, ours = small_pairs[name]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.feature_info == ref.feature_info
    assert (ours.num_features, ours.head_hidden_size, ours.num_classes) == (
        ref.num_features,
        ref.head_hidden_size,
        ref.num_classes,
    )
    mods = [m for m in ours.modules() if type(m).__name__ == "FocalModulation"]
    assert mods and not any(m.normalize_modulator for m in mods)  # as timm, for every registered name
    # pretrained tags and their facts are timm's
    timm_cfgs = timm_focalnet.default_cfgs[name]
    assert timm.list_pretrained(f"{name}.*") == [f"{name}.{t}" for t in timm_cfgs.tags]
    for tag in timm_cfgs.tags:
        ours_cfg = timm.models.get_pretrained_cfg(f"{name}.{tag}").to_dict()
        theirs = timm_cfgs.cfgs[tag].to_dict()
        assert ours_cfg.pop("hf_hub_id") == f"timm/{name}.{tag}"
        theirs.pop("hf_hub_id")
        # ours also names the official release file, the fallback when the hub cannot be reached
        assert ours_cfg.pop("url").startswith(("https://github.com/microsoft/FocalNet/", "https://projects4jw."))
        assert not theirs.pop("url")
        for key in ("architecture", "tag"):
            ours_cfg.pop(key, None), theirs.pop(key, None)
        assert ours_cfg == theirs


def fill_(model: torch.nn.Module) -> torch.nn.Module:
    """Give a model built on the meta device real weights quickly (cheaper than timm's trunc-normal init)."""
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 0.02)
            else:
                p.normal_(0, 0.05).add_(1.0 if re.search(r"norm\d?(_post)?\.weight$", name) else 0.0)
    return model


@pytest.mark.parametrize("name", ["focalnet_tiny_srf", "focalnet_tiny_lrf"])
def test_parity_with_timm_full_size(name):
    torch.manual_seed(0)
    ref = fill_(timm_reference(name, device="meta")).eval()
    ours = timm.create_model(name, device="meta").to_empty(device="cpu").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_features_only_matches_timm(small_pairs):
    ref, _ = small_pairs["focalnet_large_fl4"]
    kwargs = dict(SMALL, features_only=True, out_indices=(1, 3))
    ours = timm.create_model("focalnet_large_fl4", **kwargs).eval()
    theirs = timm_reference("focalnet_large_fl4", **kwargs).eval()
    theirs.load_state_dict(ours.state_dict())
    assert ours.feature_info.channels() == [32, 128] and ours.feature_info.reduction() == [8, 32]
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- (ii) official layout
def to_official(state_dict: dict[str, torch.Tensor], post_norm: bool) -> dict[str, torch.Tensor]:
    """timm layout -> microsoft/FocalNet classification layout (reference B.4), written independently."""
    out = {}
    for k, v in state_dict.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        if m:  # official downsample closes the previous stage
            k = f"layers.{int(m[1]) - 1}.downsample.{m[2]}"
        k = k.replace("stem.", "patch_embed.", 1) if k.startswith("stem.") else k
        k = re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", k)
        k = k.replace(".modulation.norm.", ".modulation.ln.")
        if post_norm:
            k = re.sub(r"\.norm([12])_post\.", r".norm\1.", k)
        k = k.replace("head.fc.", "head.")
        if re.search(r"(modulation\.(f|proj)|mlp\.fc[12])\.weight$", k):
            v = v.flatten(1)  # official uses nn.Linear there
        out[k] = v.clone()
    return out


@pytest.mark.parametrize("name,post_norm", [("focalnet_tiny_srf", False), ("focalnet_huge_fl3", True)])
def test_official_checkpoint_loads(small_pairs, name, post_norm):
    ref, _ = small_pairs[name]
    official = to_official(ref.state_dict(), post_norm)
    assert "patch_embed.proj.weight" in official and "layers.0.downsample.proj.weight" in official
    assert official["layers.0.blocks.0.modulation.f.weight"].ndim == 2
    if post_norm:
        assert "layers.0.blocks.0.gamma_1" in official and "layers.0.blocks.0.modulation.ln.weight" in official
    model = timm.create_model(name, **SMALL).eval()
    backbones.load_checkpoint(model, {"model": official})
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_timm_layout_passes_through(small_pairs):
    ref, _ = small_pairs["focalnet_tiny_lrf"]
    model = timm.create_model("focalnet_tiny_lrf", **SMALL)
    sd = ref.state_dict()
    filtered = checkpoint_filter_fn(sd, model)
    assert filtered.keys() == sd.keys() and all(filtered[k] is sd[k] for k in sd)


# --------------------------------------------------------------------- (iii) focal kernels and focal levels
@pytest.fixture(scope="module")
def srf_source(small_pairs):
    return small_pairs["focalnet_tiny_srf"][0]  # kernels 3, 5; focal levels 2


def test_larger_focal_windows_zero_pad_kernels_and_compute_the_same(srf_source):
    model = timm.create_model("focalnet_tiny_srf", focal_windows=9, **SMALL).eval()
    backbones.load_checkpoint(model, srf_source.state_dict())
    src, dst = srf_source.state_dict(), model.state_dict()
    for k, w in src.items():
        if "focal_layers" not in k:
            assert torch.equal(dst[k], w), k
            continue
        have, want = w.shape[-1], dst[k].shape[-1]
        assert want == have + 6  # 3 -> 9, 5 -> 11
        assert torch.equal(dst[k][..., 3 : 3 + have, 3 : 3 + have], w), k
        ring = dst[k].clone()
        ring[..., 3 : 3 + have, 3 : 3 + have] = 0
        assert not ring.any(), f"{k}: the padding ring is not zero"
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), srf_source(x), rtol=1e-5, atol=1e-6)


def test_per_stage_windows_and_pretrained_path(srf_source, tmp_path):
    """timm's own pretrained loading (build_model_with_cfg) goes through the same filter."""
    path = tmp_path / "focalnet_tiny_srf.pth"
    torch.save(srf_source.state_dict(), path)
    model = timm.create_model(
        "focalnet_tiny_srf",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        focal_windows=(11, 9, 9, 7),
        **SMALL,
    ).eval()
    assert model.layers[0].blocks[0].modulation.focal_layers[1][0].weight.shape[-1] == 13
    assert model.layers[3].blocks[0].modulation.focal_layers[0][0].weight.shape[-1] == 7
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():  # timm drops the checkpoint's classifier when num_classes differs from the cfg's
        torch.testing.assert_close(model.forward_features(x), srf_source.forward_features(x), rtol=1e-5, atol=1e-6)


def test_smaller_focal_windows_crop_the_centre():
    big = timm.create_model("focalnet_tiny_srf", focal_windows=7, **SMALL)
    small = timm.create_model("focalnet_tiny_srf", focal_windows=3, **SMALL)
    backbones.load_checkpoint(small, big.state_dict())
    k = "layers.2.blocks.1.modulation.focal_layers.1.0.weight"  # 9x9 -> 5x5
    torch.testing.assert_close(small.state_dict()[k], big.state_dict()[k][..., 2:7, 2:7], rtol=0, atol=0)


def test_more_focal_levels_rearrange_gates(srf_source):
    model = timm.create_model("focalnet_tiny_srf", focal_levels=3, focal_windows=9, **SMALL).eval()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    backbones.load_checkpoint(model, srf_source.state_dict())
    src, dst = srf_source.state_dict(), model.state_dict()
    for i, C in enumerate((16, 32, 64, 128)):
        prefix = f"layers.{i}.blocks.0.modulation."
        for p in ("weight", "bias"):
            have, got = src[prefix + f"f.{p}"], dst[prefix + f"f.{p}"]
            assert have.shape[0] == 2 * C + 3 and got.shape[0] == 2 * C + 4
            assert torch.equal(got[: 2 * C + 2], have[: 2 * C + 2])  # q, ctx and the two level gates
            assert not got[2 * C + 2].any()  # the new level's gate is zero
            assert torch.equal(got[-1], have[-1])  # the global gate moves to the last row
        # the two existing levels are zero-padded (3 -> 9, 5 -> 11); the new level (13) keeps its init
        level0, level2 = prefix + "focal_layers.0.0.weight", prefix + "focal_layers.2.0.weight"
        assert torch.equal(dst[level0][..., 3:6, 3:6], src[level0])
        assert torch.equal(dst[level2], init[level2])
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_fewer_focal_levels_is_refused(srf_source):
    model = timm.create_model("focalnet_tiny_srf", focal_levels=1, **SMALL)
    with pytest.raises(ValueError, match="2 focal levels .* model has 1"):
        backbones.load_checkpoint(model, srf_source.state_dict())


# ----------------------------------------------------------------------------------------- (iv) input sizes
@pytest.mark.parametrize("name", ["focalnet_tiny_srf", "focalnet_large_fl3"])
def test_odd_size_gives_ceil_maps_padded_right_bottom(small_pairs, name):
    _, model = small_pairs[name]
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        assert [tuple(f.shape[-2:]) for f in feats] == [(50, 64), (25, 32), (13, 16), (7, 8)]
        for f, info in zip(feats, model.feature_info):
            r = info["reduction"]
            assert f.shape[-2:] == (math.ceil(ODD[0] / r), math.ceil(ODD[1] / r))
        # the stem pads right/bottom: the same as feeding the zero-padded 200x256 image
        padded = F.pad(x, (0, 256 - ODD[1], 0, 200 - ODD[0]))
        torch.testing.assert_close(model(x), model(padded), rtol=0, atol=0)


def test_features_only_at_odd_size():
    model = timm.create_model("focalnet_tiny_lrf", features_only=True, out_indices=(1, 3), **SMALL).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *ODD))
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 32), (7, 8)]


def test_intermediates_norm_and_stop_early(small_pairs):
    _, model = small_pairs["focalnet_base_lrf"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x, norm=True)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(inters[-1], final)
        early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], inters[1])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_grad_checkpointing_same_gradients():
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = timm.create_model("focalnet_huge_fl4", drop_path_rate=0.0, **SMALL).train()
        model.set_grad_checkpointing(ckpt)
        model(x).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- (v) bad input
def test_bad_input_errors_name_the_expected_shape(small_pairs):
    _, model = small_pairs["focalnet_tiny_srf"]
    with pytest.raises(ValueError, match=r"3 channels.*\(B, 3, H, W\).*got \(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), got \(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match=r"16x40 is too small.*at least 32"):
        model(torch.randn(1, 3, 16, 40))
    with pytest.raises(ValueError, match="too small"):
        model.forward_intermediates(torch.randn(1, 3, 31, 64))
    with torch.no_grad():  # the total stride is enough, whatever the remainder
        assert model(torch.randn(1, 3, 32, 33)).shape == (1, 10)


def test_bad_config_errors():
    with pytest.raises(ValueError, match="focal_windows needs one value per stage"):
        timm.create_model("focalnet_tiny_srf", focal_windows=(9, 9), **SMALL)
