"""HaloNet: drop-in parity with timm's ByobNet-built models, any input size, the paper's H0-H7 structure."""

from __future__ import annotations

import copy
import functools
import math
import re

import pytest
import timm
import torch

import backbones
from backbones.blocks import HaloAttention

REPLACED = ["halonet_h1", "halonet26t", "sehalonet33ts", "halonet50ts", "eca_halonext26ts"]


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _calibrate(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN affines (no residual branch is zero as at init) and relative-position tables, then BN
    statistics measured on the test images themselves: a random 19-block attention network evaluated on other
    images than its BN statistics came from is chaotic (activations grow ~10x per block, so float64 rounding
    reaches 1e-6), on its own calibration images it stays at the scale of training mode. Returns eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("conv3_1x1.bn.weight"):  # small residual branches keep the trunk's scale sane
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
            elif name.endswith(("bn.weight", "post_attn.weight")):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            elif name.endswith(("bn.bias", "post_attn.bias")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith(("height_rel", "width_rel")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(_images(seed).float())
    return model.eval()


@functools.cache
def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) with the same calibrated weights, float64, eval mode (shared: do not modify, copy)."""
    torch.manual_seed(0)
    theirs = _calibrate(backbones.timm_original(name)())
    ours = timm.create_model(name)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.double().eval(), theirs.double()


@pytest.mark.parametrize("name", REPLACED)
def test_same_keys_outputs_and_features_as_timm(name):
    ours, theirs = _pair(name)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in ours.feature_info] == [
        (f["module"], f["num_chs"], f["reduction"]) for f in theirs.feature_info
    ]
    x = _images()
    with torch.no_grad():
        final, ours_feats = ours.forward_intermediates(x)
        their_final, their_feats = theirs.forward_intermediates(x)
        y = ours.forward_head(final)
        torch.testing.assert_close(y, theirs.forward_head(their_final))
    assert (y[0] - y[1]).abs().max() > 1e-2 * y.abs().max(), "outputs barely depend on the input"
    for a, b in zip(ours_feats, their_feats, strict=True):
        torch.testing.assert_close(a, b)


def test_training_mode_outputs_and_gradients_match_timm():
    """The autograd path (batch-statistics BN, baddbmm attention) against timm, outputs and gradients."""
    ours, theirs = (copy.deepcopy(m).train() for m in _pair("halonet26t"))
    x = _images(1)
    ya, yb = ours(x), theirs(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    their_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, their_params[n].grad, msg=lambda s, n=n: f"{n}: {s}")


def test_features_only_same_keys_and_outputs_as_timm():
    ours, theirs = _pair("halonet26t")
    f_ours = timm.create_model("halonet26t", features_only=True, out_indices=(1, 2, 3, 4)).double().eval()
    f_theirs = backbones.timm_original("halonet26t")(features_only=True, out_indices=(1, 2, 3, 4)).double().eval()
    assert list(f_ours.state_dict()) == list(f_theirs.state_dict())
    flat = {re.sub(r"^(stem|stages)\.(\w+)\.", r"\1_\2.", k): v for k, v in theirs.state_dict().items()}
    f_theirs.load_state_dict({k: v for k, v in flat.items() if not k.startswith("head.")})
    backbones.load_checkpoint(f_ours, f_theirs.state_dict())
    x = _images().reshape(1, 3, 512, 256)
    with torch.no_grad():
        for a, b in zip(f_ours(x), f_theirs(x), strict=True):
            torch.testing.assert_close(a, b)
    # timm's features_only layout (stem_conv1., stages_0.) loads into a classification model through our filter
    headless = timm.create_model("halonet26t", num_classes=0)
    backbones.load_checkpoint(headless, {"state_dict": f_theirs.state_dict()})


@pytest.mark.parametrize("name", ["halonet_h1", "halonet50ts"])
def test_runs_where_timm_refuses_224(name):
    ours, theirs = _pair(name)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with pytest.raises(Exception):  # noqa: B017 - timm asserts H, W multiples of 256 (without a message)
        theirs(x)
    with torch.no_grad():
        feats = ours.forward_intermediates(x, intermediates_only=True)
        y = ours(x)
    assert y.shape == (1, 1000) and torch.isfinite(y).all()
    assert [f.shape[-1] for f in feats] == [112, 56, 28, 14, 7]


def test_detection_size_feature_maps():
    """800 x 1333 (a detection input timm refuses) on a reduced-width halonet50ts: ceil(H / r) maps."""
    model = timm.create_model(
        "halonet50ts", stem_chs=16, widths=(32, 64, 64, 128), layouts=("B", "BA", "BA", "BA"), num_heads=2
    ).eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 800, 1333), intermediates_only=True)
    for f, info in zip(feats, model.feature_info, strict=True):
        r = info["reduction"]
        assert f.shape[1:] == (info["num_chs"], math.ceil(800 / r), math.ceil(1333 / r))


def test_mask_padding_reaches_every_attention_block():
    model = timm.create_model("halonet26t", mask_padding=True, stem_chs=16, widths=(32, 32, 64, 64)).eval()
    attns = [m for m in model.modules() if isinstance(m, HaloAttention)]
    assert len(attns) == 3 and all(m.mask_padding for m in attns)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 97, 131))).all()


# The paper's table (b, h, r_v, r_b, d_f, stage-3 depth), written here independently of the entrypoints.
PAPER = {
    "halonet_h0": (8, 3, 1.0, 0.5, 0, 7),
    "halonet_h1": (8, 3, 1.0, 1.0, 0, 10),
    "halonet_h2": (8, 3, 1.0, 1.25, 0, 11),
    "halonet_h3": (10, 3, 1.0, 1.5, 1024, 12),
    "halonet_h4": (12, 2, 1.0, 3.0, 1280, 12),
    "halonet_h5": (14, 2, 2.5, 2.0, 1536, 23),
    "halonet_h6": (8, 4, 3.0, 2.75, 1536, 24),
    "halonet_h7": (10, 3, 4.0, 3.5, 2048, 26),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_variant_structure(name):
    b, h, rv, rb, df, depth3 = PAPER[name]
    with torch.device("meta"):
        model = timm.create_model(name)
    assert [len(s) for s in model.stages] == [3, 3, depth3, 3]
    for i, stage in enumerate(model.stages):
        d = 64 * 2**i
        for block in stage:
            attn = block.self_attn
            assert (attn.block_size, attn.halo_size) == (b, h)
            assert attn.q.out_channels == d  # queries/keys: the ResNet bottleneck width
            assert attn.kv.out_channels == d + int(rv * d)  # values: r_v times wider
            assert block.conv3_1x1.conv.out_channels == int(rb * d)  # block output: r_b times
    assert model.num_features == (df or int(rb * 512))
    assert timm.models.get_pretrained_cfg(name).input_size[-1] == {
        "halonet_h3": 320, "halonet_h4": 384, "halonet_h5": 448, "halonet_h6": 512, "halonet_h7": 600
    }.get(name, 256)  # fmt: skip


def test_pretrained_tags_are_timms():
    expected = {
        "halonet26t": ("a1h_in1k", 0.95),
        "sehalonet33ts": ("ra2_in1k", 0.94),
        "halonet50ts": ("a1h_in1k", 0.94),
        "eca_halonext26ts": ("c1_in1k", 0.94),
    }
    for name, (tag, crop) in expected.items():
        cfg = timm.models.get_pretrained_cfg(f"{name}.{tag}")
        assert cfg.hf_hub_id == f"timm/{name}.{tag}" and cfg.crop_pct == crop and cfg.input_size == (3, 256, 256)
        assert timm.models.model_entrypoint(name).__module__ == "backbones.models.halonet"


def test_bad_input_has_clear_errors():
    model = timm.create_model("halonet_h1", stem_chs=16, widths=(16, 16, 32, 32), layouts=("A",) * 4).eval()
    with pytest.raises(ValueError, match=r"expected input x with 3 channels"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"expected input x of shape \(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model.forward_intermediates(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="layouts"):
        timm.create_model("halonet_h1", layouts=("AC", "A", "A", "A"))


@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
def test_exports_to_onnx_at_an_odd_size(tmp_path, mask_padding):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = timm.create_model(
        "halonet26t", stem_chs=16, widths=(64, 64, 128, 128), layouts=("B", "BA", "BA", "A"), num_heads=2,
        mask_padding=mask_padding, zero_init_last=False,  # residual branches (the attention) count at init
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 97, 131)
    path = tmp_path / "halonet.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"])
    onnx.checker.check_model(str(path))
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-4, atol=1e-5)
