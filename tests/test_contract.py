"""The model contract: every model registered by `backbones` is checked here the moment it is registered.

Expensive checks run on a reduced-width configuration of the same class (tests/model_specs.py SMALL_KWARGS);
parameter counts are checked on the full model, built on the meta device.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import timm
import torch
from model_specs import CLASSIFICATION_ONLY, PUBLISHED_PARAMS, small_kwargs

import backbones

MODELS = backbones.list_models()
ODD_SIZE = (197, 253)


@functools.cache
def _small(name: str, **extra) -> torch.nn.Module:
    """A shared eval-mode instance of the reduced-width model (do not modify it in a test)."""
    torch.manual_seed(0)
    return timm.create_model(name, drop_path_rate=0.0, **small_kwargs(name), **extra).eval()


def _fresh(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, drop_path_rate=0.0, **small_kwargs(name), **extra)


def _default_hw(name: str) -> tuple[int, int]:
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple(cfg.input_size[-2:]) if cfg is not None else (224, 224)


def test_registry_is_not_empty_and_specs_cover_it():
    assert MODELS, "backbones registers no model"
    missing = [n for n in MODELS if n not in PUBLISHED_PARAMS]
    assert not missing, f"add published parameter counts for {missing} to tests/model_specs.py"
    for n in MODELS:
        small_kwargs(n)
    # every name resolves through timm itself
    assert set(MODELS) <= set(timm.list_models())


@pytest.mark.parametrize("name", MODELS)
def test_param_count_matches_published(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    n = sum(p.numel() for p in model.parameters())
    published, source = PUBLISHED_PARAMS[name]
    assert abs(n - published) <= 0.005 * published, f"{name}: {n:,} params vs published {published:,} ({source})"


@pytest.mark.parametrize("name", MODELS)
def test_forward_default_size(name):
    model = _small(name)
    h, w = _default_hw(name)
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    # headless by default (e.g. Florence-2 towers, focalnet_huge_fl4): pooled features
    assert out.shape == (1, model.num_classes or model.num_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in MODELS if not any(re.fullmatch(p, n) for p in CLASSIFICATION_ONLY)])
def test_forward_odd_size_pads(name):
    model = _small(name)
    x = torch.randn(1, 3, *ODD_SIZE)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert out.shape == (1, model.num_classes or model.num_features) and torch.isfinite(out).all()
    for f, info in zip(feats, model.feature_info):
        r = info["reduction"]
        assert f.shape[-2:] == (math.ceil(ODD_SIZE[0] / r), math.ceil(ODD_SIZE[1] / r)), (info, f.shape)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_matches_feature_info(name):
    full = _small(name)
    n_feat = len(full.feature_info)
    out_indices = tuple(range(n_feat))[1::2] or (0,)
    model = _fresh(name, features_only=True, out_indices=out_indices).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = model(x)
    assert len(feats) == len(out_indices)
    assert model.feature_info.channels() == [full.feature_info[i]["num_chs"] for i in out_indices]
    for f, c, r in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (2, c, 64 // r, 96 // r)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_and_prune(name):
    model = _fresh(name).eval()
    x = torch.randn(1, 3, 64, 64)
    n_feat = len(model.feature_info)
    with torch.no_grad():
        ref = model.forward_features(x)
        final, inters = model.forward_intermediates(x)
        assert len(inters) == n_feat
        torch.testing.assert_close(final, ref)
        for f, info in zip(inters, model.feature_info):
            assert f.shape[1] == info["num_chs"]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2
        torch.testing.assert_close(last_two[-1].shape, inters[-1].shape)
        kept = model.prune_intermediate_layers(indices=[0, 1], prune_head=True)
        assert list(kept) == [0, 1]
        pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    for a, b in zip(pruned, inters[:2]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_and_headless(name):
    model = _fresh(name).eval()
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    headless = _fresh(name, num_classes=0).eval()
    with torch.no_grad():
        assert headless(x).shape == (2, headless.num_features)
        pooled = headless.forward_head(headless.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, headless.num_features)
    assert model.get_classifier() is not None


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = _fresh(name).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead, f"{name}: no gradient for {dead[:8]}"


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_same_gradients(name):
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for ckpt in (False, True):
        model = _fresh(name).train()
        model.set_grad_checkpointing(ckpt)
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_and_eval_determinism(name):
    model = _small(name)
    other = _fresh(name).eval()
    other.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b, c = model(x), model(x), other(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_group_matcher_and_no_weight_decay(name):
    model = _small(name)
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=False))
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert isinstance(model.no_weight_decay(), set)
