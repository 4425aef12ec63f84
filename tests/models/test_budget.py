"""match_budget: two mixer choices within 2% in parameters or MACs, checked with independent counters."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.models.budget import match_budget

SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=8)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    # many tiny forwards on a shared 2-core machine: a second thread only adds contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params(kwargs) -> int:
    model = timm.create_model("hybrid_tiny", **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("knob", ["mlp_ratio", "embed_dims"])
@pytest.mark.parametrize("reference, candidate", [("global", "identity"), ("pool", "focal")])
def test_params_match_within_two_percent(knob, reference, candidate):
    ref = dict(SMALL, mixers=reference)
    match = match_budget(ref, dict(SMALL, mixers=candidate), metric="params", knob=knob)
    a, b = _params(ref), _params(match.kwargs)
    assert abs(b - a) / a <= 0.02, (a, b, match.kwargs)
    assert match.kwargs["mixers"] == candidate
    if knob == "mlp_ratio":  # only the FFN moved
        assert match.kwargs["embed_dims"] == SMALL["embed_dims"]
    before = abs(_params(dict(SMALL, mixers=candidate)) - a) / a
    assert before > 0.02  # the two did differ before matching


def test_macs_match_within_two_percent_by_an_independent_counter():
    spec = importlib.util.spec_from_file_location("_bench", ROOT / "tools" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ref = dict(SMALL, mixers="global")
    match = match_budget(ref, dict(SMALL, mixers="dwconv"), metric="macs", img_size=32)
    x = torch.randn(1, 3, 32, 32)
    a = bench.count_gmacs(timm.create_model("hybrid_tiny", **ref), x, "fvcore")
    b = bench.count_gmacs(timm.create_model("hybrid_tiny", **match.kwargs), x, "fvcore")
    # fvcore does not count the attention product itself (only the projections): compare with the torch counter
    a_t = bench.count_gmacs(timm.create_model("hybrid_tiny", **ref), x, "torch")
    b_t = bench.count_gmacs(timm.create_model("hybrid_tiny", **match.kwargs), x, "torch")
    assert abs(b_t - a_t) / a_t <= 0.02, (a_t, b_t)
    assert b > a  # dwconv's model made up, in FFN MACs, the attention product fvcore does not see


def test_a_candidate_already_on_budget_is_left_as_it_is():
    match = match_budget(dict(SMALL, mixers="global"), dict(SMALL, mixers="sigmoid"), metric="params")
    assert match.kwargs == dict(SMALL, mixers="sigmoid") and match.rel_error == 0


def test_out_of_reach_is_an_error():
    with pytest.raises(ValueError, match=r"match_budget: no mlp_ratio within mlp_ratio \(3.9, 4.1\) brings"):
        match_budget(dict(SMALL, mixers="global"), dict(SMALL, mixers="identity"), ratio_range=(3.9, 4.1))
    with pytest.raises(ValueError, match="metric must be one of"):
        match_budget("global", "identity", metric="flops")
