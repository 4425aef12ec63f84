"""TimmBackboneAdapter: outputs, freezing, norm_eval, checkpointing, odd sizes, pretrained loading, registries."""

import math

import pytest
import torch
from torch import nn

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("backbones.models.focalnet")

import timm  # noqa: E402

from backbones.mm import TimmBackboneAdapter  # noqa: E402

pytestmark = pytest.mark.mm

NAME = "focalnet_tiny_srf"
SMALL = dict(embed_dim=16, depths=(1, 1, 2, 1))


def _adapter(**kwargs) -> TimmBackboneAdapter:
    model_kwargs = dict(SMALL, **kwargs.pop("model_kwargs", {}))
    return TimmBackboneAdapter(NAME, model_kwargs=model_kwargs, **kwargs)


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3), (1, 2, 3), (0, 2), (-1,)])
def test_out_indices_channels_and_strides(out_indices):
    m = _adapter(out_indices=out_indices).eval()
    want = [i % 4 for i in out_indices]
    assert m.out_indices == tuple(want)
    assert m.channels == [16 * 2**i for i in want]
    assert m.strides == [4 * 2**i for i in want]
    feats = m(torch.randn(2, 3, 64, 96))
    assert isinstance(feats, tuple) and len(feats) == len(want)
    for f, i in zip(feats, want):
        assert f.shape == (2, 16 * 2**i, 64 // 4 // 2**i, 96 // 4 // 2**i)


def test_unused_parts_are_pruned():
    m = _adapter(out_indices=(0, 1))
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.startswith(("model.layers.2", "model.layers.3", "model.head", "model.norm.")) for n in names)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in _adapter().parameters())


def test_bad_out_indices():
    with pytest.raises(ValueError, match="out of range"):
        _adapter(out_indices=(0, 4))
    with pytest.raises(ValueError, match="increasing"):
        _adapter(out_indices=(2, 1))


@pytest.mark.parametrize("hw", [(197, 253), (65, 33), (128, 160)])
def test_sizes_not_multiple_of_stride(hw):
    m = _adapter(out_norms=True).eval()
    h, w = hw
    with torch.no_grad():
        feats = m(torch.randn(1, 3, h, w))
    for f, s in zip(feats, m.strides):
        assert f.shape[-2:] == (math.ceil(h / s), math.ceil(w / s))
        assert torch.isfinite(f).all()


def test_out_norms_named_like_official_detection_backbones():
    m = _adapter(out_indices=(1, 2, 3), out_norms=True)
    assert [n for n, _ in m.named_children() if n.startswith("norm")] == ["norm1", "norm2", "norm3"]
    assert m.norm1.weight.shape == (32,)
    bn = _adapter(out_norms=dict(type="BN"))
    assert isinstance(bn.norm0, nn.BatchNorm2d)


def test_frozen_stages_freeze_and_stay_frozen_after_train():
    m = _adapter(frozen_stages=2, out_norms=True)
    frozen_prefixes = ("model.stem.", "model.layers.0.", "model.layers.1.", "norm0.", "norm1.")
    for name, p in m.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    m.train()
    for name, mod in m.named_modules():
        if name.startswith(tuple(p.rstrip(".") for p in frozen_prefixes)):
            assert not mod.training, name
    assert m.model.layers[2].training and m.norm2.training
    # Frozen parameters get no gradient (so no optimizer changes them); the others all do.
    sum((f * torch.randn_like(f)).sum() for f in m(torch.randn(1, 3, 64, 64))).backward()
    for name, p in m.named_parameters():
        assert (p.grad is None) == name.startswith(frozen_prefixes), name


def test_frozen_stages_zero_is_the_stem_only():
    m = _adapter(frozen_stages=0)
    assert not any(p.requires_grad for p in m.model.stem.parameters())
    assert all(p.requires_grad for p in m.model.layers.parameters())


def test_norm_eval_keeps_batchnorm_statistics():
    m = _adapter(out_norms=dict(type="BN"), norm_eval=True).train()
    assert not m.norm0.training and m.model.training
    mean = m.norm0.running_mean.clone()
    m(torch.randn(2, 3, 64, 64))
    assert torch.equal(mean, m.norm0.running_mean)
    m2 = _adapter(out_norms=dict(type="BN"), norm_eval=False).train()
    m2(torch.randn(2, 3, 64, 64))
    assert not torch.equal(mean, m2.norm0.running_mean)


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = _adapter(drop_path_rate=0.0, out_norms=True)
    cp = _adapter(drop_path_rate=0.0, out_norms=True, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    assert cp.model.grad_checkpointing
    x = torch.randn(2, 3, 64, 64)
    for m in (plain, cp):
        m.train()
        sum((f**2).mean() for f in m(x)).backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), cp.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_extra_model_kwargs_and_drop_path():
    m = _adapter(drop_path_rate=0.25, model_kwargs=dict(focal_windows=9, focal_levels=3))
    blk = m.model.layers[3].blocks[0]
    assert blk.modulation.focal_layers[0][0].kernel_size == (9, 9)
    assert len(blk.modulation.focal_layers) == 3
    assert blk.drop_path1.drop_prob == pytest.approx(0.25)  # last block: the full rate
    with pytest.raises(ValueError, match="features_only"):
        _adapter(model_kwargs=dict(features_only=True))


# ------------------------------------------------------------------------------------------- pretrained loading
def _classifier_state_dict() -> dict:
    """A timm-layout FocalNet classification checkpoint (focal windows 3, with head and final norm)."""
    torch.manual_seed(1)
    return timm.create_model(NAME, num_classes=10, **SMALL).state_dict()


def _to_official(sd: dict) -> dict:
    """timm layout -> microsoft/FocalNet classification layout (what the official release files hold)."""
    import re

    out = {}
    for k, v in sd.items():
        k = re.sub(r"^stem\.", "patch_embed.", k)
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k)
        k = re.sub(r"^head\.fc\.", "head.", k)
        if re.search(r"(modulation\.(f|proj)|mlp\.fc[12])\.weight$", k):
            v = v[:, :, 0, 0]  # official: nn.Linear
        out[k] = v
    return out


def _check_loaded(m: TimmBackboneAdapter, sd: dict) -> None:
    own = m.model.state_dict()
    for k, v in sd.items():
        if k not in own:
            continue
        if "focal_layers" in k:  # 3x3 / 5x5 centred in 9x9 / 11x11, zero ring
            pad = (own[k].shape[-1] - v.shape[-1]) // 2
            assert pad > 0
            torch.testing.assert_close(own[k][..., pad:-pad, pad:-pad], v)
            assert float(own[k].abs().sum()) == pytest.approx(float(v.abs().sum()), rel=1e-6)
        else:
            torch.testing.assert_close(own[k], v, msg=k)


@pytest.mark.parametrize("wrap", ["plain", "state_dict+backbone", "model+module"])
def test_pretrained_timm_layout(tmp_path, wrap):
    sd = _classifier_state_dict()
    ckpt = {
        "plain": sd,
        "state_dict+backbone": {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}},
        "model+module": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    m = _adapter(model_kwargs=dict(focal_windows=9), out_norms=True,
                 init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    m.init_weights()
    _check_loaded(m, sd)
    assert m.is_init


@pytest.fixture
def mm_log():
    """Messages logged through mmengine's current logger during the test."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_pretrained_official_layout_and_report(tmp_path, mm_log):
    sd = _classifier_state_dict()
    path = tmp_path / "focalnet_official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in _to_official(sd).items()}}, path)
    m = _adapter(model_kwargs=dict(focal_windows=9), out_norms=True)
    report = m.load_pretrained(str(path))
    _check_loaded(m, sd)
    # The classifier and the final norm are dropped; the per-output norms are reported as not loaded.
    assert report["unexpected"] == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert report["missing"] == [f"norm{i}.{p}" for i in range(4) for p in ("bias", "weight")]
    assert any("dropped 4 checkpoint keys" in m and "head.weight" in m for m in mm_log)


def test_pretrained_detector_checkpoint_with_out_norms(tmp_path):
    """A full detector checkpoint (backbone.* + neck.* ...) loads the backbone and its norm{i}."""
    src = _adapter(model_kwargs=dict(focal_windows=9), out_norms=True)
    for p in src.parameters():
        nn.init.normal_(p)
    ckpt = {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in src.state_dict().items()},
                                        "neck.lateral_convs.0.conv.weight": torch.zeros(8, 16, 1, 1)}}
    path = tmp_path / "det.pth"
    torch.save(ckpt, path)
    m = _adapter(model_kwargs=dict(focal_windows=9), out_norms=True,
                 init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    m.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v, msg=k)


def test_pretrained_wrong_family_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    m = _adapter(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    with pytest.raises(ValueError, match="another model family"):
        m.init_weights()


def test_pretrained_wrong_size_is_a_clear_error(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(timm.create_model(NAME, embed_dim=24, depths=SMALL["depths"]).state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches"):
        _adapter().load_pretrained(str(path))


def test_init_weights_never_reinitialises_the_timm_model():
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    det = MODELS.build(dict(
        type="RetinaNet",
        data_preprocessor=dict(type="DetDataPreprocessor"),
        backbone=dict(type="TimmBackboneAdapter", model_name=NAME, out_indices=(1, 2, 3), model_kwargs=SMALL),
        neck=dict(type="FPN", in_channels=[32, 64, 128], out_channels=16, start_level=0, num_outs=3),
        bbox_head=dict(type="RetinaHead", num_classes=2, in_channels=16, feat_channels=16,
                       anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1,
                                             ratios=[1.0], strides=[8, 16, 32]),
                       bbox_coder=dict(type="DeltaXYWHBBoxCoder"),
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True), loss_bbox=dict(type="L1Loss")),
    ))
    before = {k: v.clone() for k, v in det.backbone.state_dict().items()}
    det.init_weights()
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_registered_in_both_frameworks(scope):
    import importlib

    from mmengine.registry import init_default_scope

    registry = importlib.import_module(f"{scope}.registry")
    assert registry.MODELS.get("TimmBackboneAdapter") is TimmBackboneAdapter
    assert registry.OPTIM_WRAPPER_CONSTRUCTORS.get("LayerDecayOptimWrapperConstructor") is not None
    init_default_scope(scope)
    m = registry.MODELS.build(dict(type="TimmBackboneAdapter", model_name=NAME, model_kwargs=SMALL))
    assert isinstance(m, TimmBackboneAdapter)


def test_import_backbones_does_not_import_openmmlab():
    import subprocess
    import sys

    code = "import sys, backbones; print(any(m.split('.')[0] in ('mmdet', 'mmseg', 'mmengine') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_checkpoint_schemes(monkeypatch):
    """hf-hub:/timm: names go to timm's Hugging Face loader (not downloaded here)."""
    import timm.models._hub as hub

    from backbones.mm import read_checkpoint

    calls = []
    monkeypatch.setattr(hub, "load_state_dict_from_hf", lambda repo: calls.append(repo) or {"w": torch.zeros(1)})
    read_checkpoint("timm:focalnet_tiny_srf.ms_in1k")
    read_checkpoint("hf-hub:someone/model")
    assert calls == ["timm/focalnet_tiny_srf.ms_in1k", "someone/model"]


def test_frozen_stages_count_real_stages_when_a_feature_is_in_the_stem():
    """HaloNet's feature 0 is inside the stem (stem.conv*): frozen_stages=1 is still stem + stages.0 (ResNet's)."""
    m = TimmBackboneAdapter("halonet26t", out_indices=(1, 2, 3, 4), frozen_stages=1, out_norms=True)
    assert m.model.feature_info[0]["module"].startswith("stem.")
    frozen = ("model.stem.", "model.stages.0.", "norm1.")  # norm1: the output norm of feature 1 = stages.0
    for name, p in m.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    m.train()
    assert not m.model.stem.training and not m.model.stages[0].training and not m.norm1.training
    assert m.model.stages[1].training and m.norm2.training


def test_out_norms_per_output():
    m = _adapter(out_indices=(0, 1, 2, 3), out_norms=(False, True, dict(type="GN", num_groups=4), True)).eval()
    assert not hasattr(m, "norm0") and isinstance(m.norm2, nn.GroupNorm)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = m.model.forward_intermediates(x, indices=[0, 1, 2, 3], norm=False, intermediates_only=True)
        feats = m(x)
    torch.testing.assert_close(feats[0], raw[0])  # no norm: the stage output itself
    torch.testing.assert_close(feats[1], m.norm1(raw[1]))
    assert feats[1].mean((1,)).abs().max() < 1e-4  # LayerNorm over channels
    with pytest.raises(ValueError, match="out_norms has 2 entries for 4 out_indices"):
        _adapter(out_norms=(True, True))
