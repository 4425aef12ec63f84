"""DaViT: parity with timm's own class, official / detection / Florence-2 checkpoint layouts, autocast at
detection size, odd sizes, bad input."""

from __future__ import annotations

import math
import re

import pytest
import timm
import timm.models.davit as timm_davit
import torch

import backbones
from backbones.models.davit import DaVit

NAMES = [
    "davit_tiny",
    "davit_small",
    "davit_base",
    "davit_large",
    "davit_huge",
    "davit_giant",
    "davit_base_fl",
    "davit_huge_fl",
]
SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 2, 1), num_classes=10)
ODD = (197, 253)


def timm_reference(name: str, **kwargs) -> torch.nn.Module:
    """timm's own DaVit for ``name`` (its entrypoint lets kwargs override the architecture)."""
    model = backbones.timm_original(name)(pretrained=False, **kwargs)
    assert kwargs.get("features_only") or type(model) is timm_davit.DaVit
    return model


def randomize_(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter so that each (norms, qkv biases, CPE biases) visibly matters."""
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
        assert isinstance(ours, DaVit)
        ours.load_state_dict(ref.state_dict(), strict=True)
        pairs[name] = ref, ours
    return pairs


def _assert_same_outputs(ours, ref, x, tol=1e-5):
    with torch.no_grad():
        final, inters = ours.forward_intermediates(x)
        ref_final, ref_inters = ref.forward_intermediates(x)
        for a, b in zip(inters + [final], ref_inters + [ref_final], strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        torch.testing.assert_close(ours.forward_head(final), ref.forward_head(ref_final), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_match_timm(name):
    with torch.device("meta"):
        ours = timm.create_model(name)
        ref = timm_reference(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert ours.feature_info == ref.feature_info
    assert ours.num_classes == ref.num_classes and ours.num_features == ref.num_features


@pytest.mark.parametrize("name", NAMES)
def test_parity_with_timm_small(small_pairs, name):
    ref, ours = small_pairs[name]
    for hw in ((224, 224), ODD, (9, 30)):
        _assert_same_outputs(ours, ref, torch.randn(2, 3, *hw))


def test_parity_with_timm_davit_tiny_full_size():
    torch.manual_seed(0)
    ref = randomize_(timm_reference("davit_tiny")).eval()
    ours = timm.create_model("davit_tiny").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)  # odd sizes: the reduced-width pairs above
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["davit_tiny", "davit_base_fl"])
def test_training_gradients_match_timm(name):
    torch.manual_seed(0)
    ref = randomize_(timm_reference(name, **SMALL)).train()
    ours = timm.create_model(name, **SMALL).train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 45, 61)
    for model in (ref, ours):
        model(x).logsumexp(-1).sum().backward()
    ref_grads = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n].grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


def test_drop_path_schedule_matches_timm():
    """One rate per dual block, shared by its spatial and channel halves and both branches (timm's schedule)."""

    def rates(model):
        return [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]

    ours = timm.create_model("davit_small", drop_path_rate=0.3, **SMALL | dict(depths=(1, 1, 9, 1)))
    ref = timm_reference("davit_small", drop_path_rate=0.3, **SMALL | dict(depths=(1, 1, 9, 1)))
    # the first dual block's rate is 0 (no DropPath module): 11 dual blocks x 2 halves x 2 branches
    assert rates(ours) == pytest.approx(rates(ref)) and len(rates(ours)) == 4 * 11
    assert rates(ours)[-1] == pytest.approx(0.3)


def test_features_only_matches_timm():
    kwargs = dict(SMALL, features_only=True, out_indices=(1, 3))
    f_ref = randomize_(timm_reference("davit_tiny", **kwargs)).eval()
    f_ours = timm.create_model("davit_tiny", **kwargs).eval()
    f_ours.load_state_dict(f_ref.state_dict())
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        for a, b in zip(f_ours(x), f_ref(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_feature_map_sizes_round_up():
    """Sizes timm's DaViT gives (shared/reference A.1), including inputs smaller than the total stride."""
    model = timm.create_model("davit_tiny", **SMALL).eval()
    expected = {(7, 7): [(2, 2), (1, 1), (1, 1), (1, 1)], (4, 9): [(1, 3), (1, 2), (1, 1), (1, 1)]}
    with torch.no_grad():
        for hw, sizes in expected.items():
            feats = model.forward_intermediates(torch.randn(1, 3, *hw), intermediates_only=True)
            assert [tuple(f.shape[-2:]) for f in feats] == sizes


# ---------------------------------------------------------------------------------------------- checkpoints
def official_layout(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """dingmyu/davit classification keys for a timm-layout DaViT state dict (written key by key)."""
    out = {}
    for k, v in timm_sd.items():
        if m := re.fullmatch(r"stem\.(conv|norm)\.(weight|bias)", k):
            k = f"patch_embeds.0.{'proj' if m[1] == 'conv' else 'norm'}.{m[2]}"
        elif m := re.fullmatch(r"stages\.(\d)\.downsample\.(conv|norm)\.(weight|bias)", k):
            k = f"patch_embeds.{m[1]}.{'proj' if m[2] == 'conv' else 'norm'}.{m[3]}"
        elif m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.([01])\.(.+)", k):
            rest = m[4].replace("cpe1.", "cpe.0.").replace("cpe2.", "cpe.1.")
            k = f"main_blocks.{m[1]}.{m[2]}.{m[3]}.{rest}"
        elif m := re.fullmatch(r"head\.norm\.(weight|bias)", k):
            k = f"norms.{m[1]}"
        elif m := re.fullmatch(r"head\.fc\.(weight|bias)", k):
            k = f"head.{m[1]}"
        else:
            raise AssertionError(f"unexpected timm key {k}")
        out[k] = v
    return out


FLORENCE2_SUBLAYERS = {
    "cpe1.proj": "conv1.fn.dw",
    "cpe2.proj": "conv2.fn.dw",
    "norm2": "ffn.norm",
    "mlp.fc1": "ffn.fn.net.fc1",
    "mlp.fc2": "ffn.fn.net.fc2",
}


def florence2_layout(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Florence-2 checkpoint (microsoft/Florence-2-*, ``vision_tower.`` keys) holding a timm-layout tower,
    plus keys of the rest of Florence-2 that a tower must ignore; the tower has no classifier."""
    out = {
        "language_model.model.shared.weight": torch.zeros(5, 4),
        "image_projection": torch.zeros(4, 4),
        "image_proj_norm.weight": torch.ones(4),
        "image_pos_embed.row_embeddings.weight": torch.zeros(3, 2),
    }
    for k, v in timm_sd.items():
        if k.startswith("head."):
            continue
        if m := re.fullmatch(r"stem\.(conv|norm)\.(weight|bias)", k):
            k = f"convs.0.{'proj' if m[1] == 'conv' else 'norm'}.{m[2]}"
        elif m := re.fullmatch(r"stages\.(\d)\.downsample\.(conv|norm)\.(weight|bias)", k):
            k = f"convs.{m[1]}.{'proj' if m[2] == 'conv' else 'norm'}.{m[3]}"
        elif m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(spatial|channel)_block\.(.+)\.(weight|bias)", k):
            attn = "window_attn" if m[3] == "spatial" else "channel_attn"
            sub = {"norm1": f"{attn}.norm", "attn.qkv": f"{attn}.fn.qkv", "attn.proj": f"{attn}.fn.proj"}
            sub.update(FLORENCE2_SUBLAYERS)
            k = f"blocks.{m[1]}.{m[2]}.{m[3]}_block.{sub[m[4]]}.{m[5]}"
        else:
            raise AssertionError(f"unexpected timm key {k}")
        out[f"vision_tower.{k}"] = v
    return out


def test_official_checkpoint_loads(small_pairs):
    ref, _ = small_pairs["davit_tiny"]
    official = official_layout(ref.state_dict())
    # the layout written above is the one timm's own filter converts (and so the official one, see reference A.4)
    assert timm_davit.checkpoint_filter_fn(official, ref).keys() == ref.state_dict().keys()
    ours = timm.create_model("davit_tiny", **SMALL).eval()
    backbones.load_checkpoint(ours, {"model": official})  # strict
    _assert_same_outputs(ours, ref, torch.randn(1, 3, *ODD))


def test_official_detection_checkpoint_loads_backbone(small_pairs):
    """dingmyu/davit mmdet/mmseg checkpoints: backbone keys under 'backbone.' with per-output norms norm0..3, next
    to neck/head keys; no classifier."""
    ref, _ = small_pairs["davit_tiny"]
    backbone = {f"backbone.{k}": v for k, v in official_layout(ref.state_dict()).items() if not k.startswith("head.")}
    backbone = {k: v for k, v in backbone.items() if not k.startswith("backbone.norms.")}
    extra = {f"backbone.norm{i}.weight": torch.ones(c) for i, c in enumerate(SMALL["embed_dims"])}
    extra["neck.lateral_convs.0.conv.weight"] = torch.zeros(8, 16, 1, 1)
    extra["rpn_head.rpn_conv.weight"] = torch.zeros(8, 8, 3, 3)
    ours = timm.create_model("davit_tiny", **SMALL).eval()
    result = backbones.load_checkpoint(ours, {"state_dict": backbone | extra, "meta": {}}, strict=False)
    assert sorted(result.missing_keys) == ["head.fc.bias", "head.fc.weight", "head.norm.bias", "head.norm.weight"]
    assert not result.unexpected_keys
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(ours.forward_intermediates(x)[1], ref.forward_intermediates(x)[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_florence2_checkpoint_loads(small_pairs):
    ref, _ = small_pairs["davit_base_fl"]
    florence = florence2_layout(ref.state_dict())
    timm_converted = timm_davit.checkpoint_filter_fn(florence, ref)
    assert timm_converted.keys() == {k for k in ref.state_dict() if not k.startswith("head.")}
    ours = timm.create_model("davit_base_fl", **SMALL).eval()
    head_before = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("head.")}
    backbones.load_checkpoint(ours, florence)  # strict: the head keeps its own initial values
    for k, v in head_before.items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)
    x = torch.randn(1, 3, 200, 136)
    with torch.no_grad():
        final, inters = ours.forward_intermediates(x)
        ref_final, ref_inters = ref.forward_intermediates(x)
    for a, b in zip(inters + [final], ref_inters + [ref_final], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_timm_layout_passes_through_unchanged(small_pairs):
    ref, ours = small_pairs["davit_base_fl"]
    sd = ref.state_dict()
    out = backbones.models.davit.checkpoint_filter_fn(sd, ours)
    assert list(out) == list(sd) and all(out[k] is sd[k] for k in sd)


# ---------------------------------------------------------------------------------------------- dense / autocast
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_at_detection_size_stays_finite(dtype):
    """800 x 1333 under autocast. The stage-0 channel blocks get weights that make their logits ~1.5e5, beyond
    fp16: timm's formulation turns them into inf/NaN, ours computes them in fp32."""
    torch.manual_seed(0)
    kwargs = dict(SMALL, depths=(1, 1, 1, 1), num_classes=0)
    ours = timm.create_model("davit_tiny", **kwargs).eval()
    ref = timm_reference("davit_tiny", **kwargs).eval()
    with torch.no_grad():
        qkv = ours.stages[0].blocks[0][1].attn.qkv  # channel half of the first dual block (16 channels, 1 group)
        qkv.weight.copy_(torch.eye(16).repeat(3, 1) * 3)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 800, 1333)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        feats = ours.forward_intermediates(x, intermediates_only=True)
        ref_feats = ref.forward_intermediates(x, intermediates_only=True, stop_early=True, indices=[0])
    assert [tuple(f.shape[-2:]) for f in feats] == [(200, 334), (100, 167), (50, 84), (25, 42)]
    assert all(torch.isfinite(f).all() for f in feats)
    if dtype == torch.float16:
        assert not torch.isfinite(ref_feats[0]).all(), "the weights no longer overflow timm's fp16 formulation"


# ---------------------------------------------------------------------------------------------- API details
def test_bad_input_is_a_clear_error():
    model = timm.create_model("davit_tiny", **SMALL).eval()
    with pytest.raises(ValueError, match=r"3 channels.*\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model.forward_intermediates(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt="NHWC")
    with pytest.raises(ValueError, match="one value per stage"):
        DaVit(depths=(1, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="attn_type"):
        DaVit(attn_types=("spatial", "global"), **{k: v for k, v in SMALL.items() if k != "num_classes"})
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 4)).shape == (1, 10)  # one stem patch is enough


def test_pretrained_tags_kept():
    tags = set(timm.list_pretrained("davit*"))
    assert {
        "davit_tiny.msft_in1k",
        "davit_small.msft_in1k",
        "davit_base.msft_in1k",
        "davit_base_fl.msft_florence2",
        "davit_huge_fl.msft_florence2",
    } <= tags
    assert timm.models.get_pretrained_cfg("davit_tiny.msft_in1k").hf_hub_id == "timm/davit_tiny.msft_in1k"
    fl = timm.models.get_pretrained_cfg("davit_huge_fl.msft_florence2")
    assert fl.hf_hub_id == "microsoft/Florence-2-large" and fl.num_classes == 0
    assert timm.models.model_entrypoint("davit_tiny").__module__ == "backbones.models.davit"


def test_head_norm_first_and_grad_checkpointed_intermediates(small_pairs):
    ref = randomize_(timm_reference("davit_tiny", head_norm_first=True, **SMALL)).eval()
    ours = timm.create_model("davit_tiny", head_norm_first=True, **SMALL).eval()
    ours.load_state_dict(ref.state_dict())
    ours.set_grad_checkpointing(True)
    x = torch.randn(1, 3, 70, 50)
    _assert_same_outputs(ours, ref, x)
    with torch.no_grad():
        normed = ours.forward_intermediates(x, norm=True, intermediates_only=True)[-1]
        assert normed.shape[1] == ours.num_features and math.isfinite(normed.abs().max().item())
