"""EfficientViT-MSRA: parity with timm's class, official checkpoint layout, fresh attention biases, fuse, ONNX."""

from __future__ import annotations

import copy
import functools
import itertools
import re

import pytest
import timm
import torch
from timm.models import efficientvit_msra as timm_evit

import backbones
from backbones.models.efficientvit_msra import EfficientVitMsra

NAMES = [f"efficientvit_m{i}" for i in range(6)]


def _calibrate(model: torch.nn.Module, seed: int = 0, hw: tuple[int, int] = (224, 224)) -> torch.nn.Module:
    """Random BN affines and attention biases, then BN statistics measured on random images (so the outputs
    depend strongly on the input and every branch contributes). Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bn.weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            elif name.endswith("bn.bias") or "attention_biases" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(torch.randn(4, 3, *hw, generator=g))
    return model.eval()


@functools.cache
def _ours(name: str, **kwargs) -> EfficientVitMsra:
    """A calibrated eval-mode model shared by the tests (do not modify; copy it)."""
    torch.manual_seed(0)
    return _calibrate(timm.create_model(name, **kwargs))


def _timm_twin(model: EfficientVitMsra, name: str, **kwargs) -> torch.nn.Module:
    twin = backbones.timm_original(name)(**kwargs)
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.eval()


def _assert_input_sensitive(y: torch.Tensor) -> None:
    assert (y[0] - y[1]).abs().max() > 1e-2, "outputs barely depend on the input: the comparison would be weak"


@pytest.mark.parametrize("name", NAMES)
def test_same_keys_and_outputs_as_timm(name):
    ours = _ours(name)
    twin = _timm_twin(ours, name)
    assert set(ours.state_dict()) == set(twin.state_dict())
    for hw in [(224, 224), (197, 253)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            y = ours(x)
            torch.testing.assert_close(y, twin(x), rtol=1e-5, atol=1e-5)
        _assert_input_sensitive(y)


def test_training_mode_outputs_and_gradients_match_timm():
    # float64: batch statistics of tiny batches amplify float32 rounding differences in the backward pass
    ours = copy.deepcopy(_ours("efficientvit_m0")).double().train()
    twin = _timm_twin(ours, "efficientvit_m0").double().train()
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    ya, yb = ours(x), twin(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    twin_params = dict(twin.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, twin_params[n].grad, msg=lambda m, n=n: f"{n}: {m}")


def test_windows_follow_img_size_like_timm():
    for img_size, windows in [(224, (7, 7, 4)), (512, (7, 7, 7)), (96, (6, 3, 2))]:
        ours = timm.create_model("efficientvit_m0", img_size=img_size)
        twin = backbones.timm_original("efficientvit_m0")(img_size=img_size)
        got = tuple(s.blocks[0].mixer.m.window_size for s in ours.stages)
        assert got == windows == tuple(s.blocks[0].mixer.m.attn.resolution for s in twin.stages)


def test_checkpoint_at_other_window_size_resizes_biases_like_timm():
    src = _ours("efficientvit_m0").state_dict()  # stage-3 biases (4, 16): window 4 at 224
    ours = timm.create_model("efficientvit_m0", img_size=512)
    backbones.load_checkpoint(ours, src)
    twin = backbones.timm_original("efficientvit_m0")(img_size=512)
    expected = timm_evit.checkpoint_filter_fn(src, twin)
    key = "stages.2.blocks.0.mixer.m.attn.attention_biases"
    assert src[key].shape == (4, 16) and ours.state_dict()[key].shape == (4, 49)
    for k, v in ours.state_dict().items():
        if k in expected:
            torch.testing.assert_close(v, expected[k], msg=lambda m, k=k: f"{k}: {m}")


def test_set_input_size_matches_timm():
    ours = copy.deepcopy(_ours("efficientvit_m0"))
    twin = _timm_twin(ours, "efficientvit_m0")
    ours.set_input_size(320)
    twin.set_input_size(320)
    assert ours.stages[2].blocks[0].mixer.m.window_size == 5  # 320 / 16 = 20 -> 10 -> 5: biases 4x4 -> 5x5
    x = torch.randn(2, 3, 320, 320)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), twin(x), rtol=1e-5, atol=1e-5)


def _to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our/timm keys -> the official Cream layout, written from the layout description (reference B.3):
    ``patch_embed.{0,2,4,6}``, ``blocks1..3`` with each subsample as entries 0..2, Conv2d_BN's conv named ``c``,
    the head's linear ``l``, persistent ``attention_bias_idxs`` and 1x1 conv weights stored 2-D."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.conv(\d)\.", lambda m: f"patch_embed.{2 * (int(m[1]) - 1)}.", k)
        k = re.sub(r"\.conv\.weight$", ".c.weight", k)
        k = k.replace("head.linear.", "head.l.")
        m = re.match(r"^stages\.(\d)\.(downsample\.(?:res1|patchmerge|res2)|blocks\.(\d+))\.(.*)$", k)
        if m:
            stage, part, j, rest = int(m[1]), m[2], m[3], m[4]
            pos = {"downsample.res1": 0, "downsample.patchmerge": 1, "downsample.res2": 2}.get(part)
            pos = pos if pos is not None else int(j) + (3 if stage > 0 else 0)
            k = f"blocks{stage + 1}.{pos}.{rest}"
        if v.ndim == 4 and v.shape[2:] == (1, 1) and v.shape[1] > 1:
            v = v[:, :, 0, 0]
        out[k] = v
        if k.endswith("attention_biases"):
            r = int(v.shape[1] ** 0.5)
            seen, idxs = {}, []
            points = list(itertools.product(range(r), range(r)))
            for p1, p2 in itertools.product(points, points):
                idxs.append(seen.setdefault((abs(p1[0] - p2[0]), abs(p1[1] - p2[1])), len(seen)))
            out[k.replace("attention_biases", "attention_bias_idxs")] = torch.tensor(idxs).view(r * r, r * r)
    out.update({k.replace("head.", "head_dist."): v for k, v in out.items() if k.startswith("head.")})
    return out


def test_official_checkpoint_layout_loads():
    src = _ours("efficientvit_m1")
    official = _to_official(src.state_dict())
    assert any(k.startswith("blocks3.3.mixer.m.attn.qkvs.0.c") for k in official)  # the layout really differs
    model = timm.create_model("efficientvit_m1").eval()
    backbones.load_checkpoint(model, {"model": official})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)


def test_timm_and_own_layouts_pass_through_the_filter():
    from backbones.models.efficientvit_msra import checkpoint_filter_fn

    src = _ours("efficientvit_m0")
    twin = _timm_twin(src, "efficientvit_m0")
    for sd in (src.state_dict(), twin.state_dict()):
        out = checkpoint_filter_fn(sd, src)
        assert out.keys() == src.state_dict().keys()


def _fresh_after_change(factory, dtype_change: bool = True) -> None:
    """Eval a model, run it, then load other weights / move dtype: it must then equal a model built that way."""
    a, b = factory(0), factory(1)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a.eval()(x)
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a(x), b.eval()(x), rtol=0, atol=0)
        if dtype_change:
            a64, b64 = a.to(torch.float64), copy.deepcopy(b).to(torch.float64)
            torch.testing.assert_close(a64(x.double()), b64(x.double()))
            a.to(torch.bfloat16)(x.bfloat16())


def _randomized(ctor, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ctor()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "attention_biases" in n:
                p.normal_(0, 2.0)
            elif n.endswith("bn.weight"):
                p.uniform_(0.5, 1.0)
    return model


def test_attention_biases_never_stale():
    kwargs = dict(embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=(2, 2, 2), key_dim=(4, 4, 4))
    _fresh_after_change(lambda s: _randomized(lambda: timm.create_model("efficientvit_m0", **kwargs), s))


def test_stale_bias_check_can_fail():
    """The same check on timm 1.0.31's class, whose eval-mode bias cache survives load_state_dict (reference B.4).
    If timm ever fixes that, this test fails and can go: it only shows the check above has teeth."""
    kwargs = dict(embed_dim=[16, 24, 32], depth=[1, 1, 1], num_heads=[2, 2, 2], key_dim=[4, 4, 4])
    ctor = backbones.timm_original("efficientvit_m0")
    with pytest.raises(AssertionError):
        _fresh_after_change(lambda s: _randomized(lambda: ctor(**kwargs), s), dtype_change=False)


@pytest.mark.parametrize("name", ["efficientvit_m0", "efficientvit_m4"])
def test_fuse_equals_unfused(name):
    ref = _ours(name)
    fused = copy.deepcopy(ref).fuse()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in ref.parameters())
    via_timm = timm.models.reparameterize_model(ref)  # timm's generic walker gives the same network
    for hw in [(224, 224), (197, 253)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            y = ref(x)
            # float32: the folded weights round differently; within 1e-5 of the logits' scale (~5 here)
            for other in (fused(x), via_timm(x)):
                assert (other - y).abs().max() <= 1e-5 * y.abs().max()
    # float64 (folded in float64): the folding itself is exact
    ref64 = copy.deepcopy(ref).double()
    fused64 = copy.deepcopy(ref64).fuse()
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused64(x), ref64(x), rtol=0, atol=1e-10)


def test_fused_model_exports_to_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = copy.deepcopy(_ours("efficientvit_m0")).fuse()
    x = torch.randn(1, 3, 224, 224)
    path = tmp_path / "efficientvit_m0.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["image"], output_names=["logits"])
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    _assert_input_sensitive(torch.cat([ref, model(torch.randn(1, 3, 224, 224))]))
    torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-4)


def test_bad_input_errors_name_the_expected_shape():
    model = _ours("efficientvit_m0")
    with pytest.raises(ValueError, match=r"3 channels.*\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="embed_dim\\[0\\] must be divisible by 8"):
        EfficientVitMsra(embed_dim=(20, 24, 32))
    with pytest.raises(ValueError, match="num_heads needs one entry per stage"):
        EfficientVitMsra(num_heads=(4, 4))


def test_feature_info_and_pretrained_tags():
    with torch.device("meta"):
        model = timm.create_model("efficientvit_m4")
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [(128, 16), (256, 32), (384, 64)]
    for name in NAMES:
        tags = timm.list_pretrained(f"{name}.*")
        assert tags == [f"{name}.r224_in1k"]
        assert timm.models.get_pretrained_cfg(tags[0]).hf_hub_id == f"timm/{tags[0]}"


def test_drop_path_is_stochastic_in_training_only():
    kwargs = dict(embed_dim=(16, 24, 32), depth=(1, 1, 2), num_heads=(2, 2, 2), key_dim=(4, 4, 4))
    model = timm.create_model("efficientvit_m0", drop_path_rate=0.5, zero_init_last=False, **kwargs)
    x = torch.randn(4, 3, 64, 64)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
