"""HeadMixture (Mixture-of-Head routing) against a per-token loop written from the MoH formulation, the ``moh=``
option of the aggregated / length-scaled / global mixers, bad configurations and graph capture."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks import HeadMixture, create_mixer

# (num_heads, shared S, routed top-k): the official gate forms (all-shared softmax, one shared head, routed only,
# shared softmax + routed, every routed head on) and the released stage-4 shapes of MoH-ViT-S-75 / B-50.
CONFIGS = [(3, 3, 0), (4, 1, 2), (4, 0, 2), (6, 2, 3), (4, 2, 2), (24, 4, 12), (32, 4, 8)]


def _naive_gates(x_tok: list[float], mix: HeadMixture) -> list[float]:
    """Gates of one token by plain loops: softmax, top-k by sorting, renormalise, shared/routed mix."""
    s, k, h = mix.shared_heads, mix.routed_heads, mix.num_heads

    def softmax(weight):
        logits = [sum(w * v for w, v in zip(row, x_tok)) for row in weight.tolist()]
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        return [v / sum(e) for v in e]

    shared = [s * p for p in softmax(mix.wg_1.weight)] if s > 1 else [1.0] * s
    if k == 0:
        return shared
    probs = softmax(mix.wg.weight)
    chosen = sorted(range(h - s), key=lambda e: -probs[e])[:k]
    total = sum(probs[e] for e in chosen)
    routed = [k * probs[e] / total if e in chosen else 0.0 for e in range(h - s)]
    if s == 0:
        return routed
    a, b = (2 * p for p in softmax(mix.wg_0.weight))
    return [a * g for g in shared] + [b * g for g in routed]


def _naive_mixture(mix: HeadMixture, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    xs, hs = x.reshape(-1, x.shape[-1]).double(), heads.reshape(-1, *heads.shape[-2:]).double()
    out = torch.empty_like(hs)
    for n in range(xs.shape[0]):
        gates = _naive_gates(xs[n].tolist(), mix)
        for i, g in enumerate(gates):
            out[n, i] = g * hs[n, i]
    return out.reshape(heads.shape).to(heads.dtype)


def _mixture(h, s, k, dim=16):
    torch.manual_seed(0)
    mix = HeadMixture(dim, h, s, k)
    for p in mix.parameters():  # spread the logits so that top-k is decided by clear margins
        torch.nn.init.normal_(p, std=1.0)
    return mix


@pytest.mark.parametrize("h,s,k", CONFIGS)
@pytest.mark.parametrize("lead", [(2, 5, 7), (3, 11)], ids=["BHW-odd", "BN"])
def test_matches_per_token_loop(h, s, k, lead):
    mix = _mixture(h, s, k).eval()
    x, heads = torch.randn(*lead, 16), torch.randn(*lead, h, 5)
    torch.testing.assert_close(mix(x, heads), _naive_mixture(mix, x, heads), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,s,k", [c for c in CONFIGS if c[2] > 0])
def test_balancing_loss_matches_the_formula_and_only_in_training(h, s, k):
    mix = _mixture(h, s, k)
    x = torch.randn(2, 3, 5, 16)
    mix.eval()(x, torch.randn(2, 3, 5, h, 4))
    assert mix.aux_loss is None
    mix.train()(x, torch.randn(2, 3, 5, h, 4))
    tokens = x.reshape(-1, 16).double()
    r = h - s
    probs = F.softmax(tokens @ mix.wg.weight.double().t(), dim=-1)
    counts = [0] * r
    for row in probs.tolist():
        for e in sorted(range(r), key=lambda e: -row[e])[:k]:
            counts[e] += 1
    share = torch.tensor(counts, dtype=torch.float64) / tokens.shape[0]
    expected = r * r * (probs.mean(0) * share).mean()
    torch.testing.assert_close(mix.aux_loss.double(), expected, rtol=1e-5, atol=1e-7)
    assert mix.aux_loss.requires_grad  # trains the router through the mean probabilities


def test_top_k_heads_per_token_and_gate_sums():
    mix = _mixture(24, 4, 12).eval()
    gates = mix.gates(torch.randn(50, 16))
    assert ((gates[:, 4:] > 0).sum(-1) == 12).all()  # exactly k routed heads active
    assert (gates[:, :4] > 0).all()  # shared heads always on
    # the shared gates sum to a * S, the routed ones to b * k, with a + b = 2
    shared, routed = gates[:, :4].sum(-1) / 4, gates[:, 4:].sum(-1) / 12
    torch.testing.assert_close(shared + routed, torch.full((50,), 2.0))


def _head_outputs(plain, x):
    """The concatenated head outputs of a plain mixer (its output projection replaced by the identity)."""
    proj = plain.proj
    plain.proj = torch.nn.Identity()
    try:
        return plain(x)
    finally:
        plain.proj = proj


MIXERS = {
    "aggregated": dict(),
    "length_scaled": dict(),
    "global": dict(),
}


@pytest.mark.parametrize("name", list(MIXERS))
@pytest.mark.parametrize("s,k", [(1, 2), (4, 0), (0, 3), (2, 1)])
def test_mixer_option_weights_the_heads_before_the_projection(name, s, k):
    dim, h = 32, 4
    torch.manual_seed(0)
    moh = create_mixer(name, dim, h, moh=dict(shared_heads=s, routed_heads=k)).eval()
    plain = create_mixer(name, dim, h).eval()
    missing, unexpected = plain.load_state_dict(moh.state_dict(), strict=False)
    assert not missing and all(key.startswith("moh.") for key in unexpected)
    x = torch.randn(2, 9, 13, dim)
    with torch.no_grad():
        heads = _head_outputs(plain, x).reshape(2, 9, 13, h, dim // h)
        expected = plain.proj(_naive_mixture(moh.moh, x, heads).reshape(2, 9, 13, dim))
        torch.testing.assert_close(moh(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MIXERS))
def test_without_moh_nothing_changes(name):
    torch.manual_seed(0)
    a = create_mixer(name, 32, 4)
    torch.manual_seed(0)
    b = create_mixer(name, 32, 4, moh=None)
    assert a.moh is None and not any("moh" in key for key in a.state_dict())
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randn(1, 5, 6, 32)
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize(
    "moh,match",
    [
        (dict(shared_heads=1, routed_heads=4), "routed_heads=4 must be at most"),
        (dict(shared_heads=2, routed_heads=0), "every head is shared"),
        (dict(shared_heads=4, routed_heads=1), "shared_heads=4 must lie in"),
        (dict(shared=1, routed=1), "moh must be None or dict"),
        ((1, 2), "moh must be None or dict"),
        (dict(shared_heads=-1, routed_heads=1), "non-negative int"),
    ],
)
def test_bad_configurations_are_refused(moh, match):
    with pytest.raises(ValueError, match=match):
        create_mixer("global", 32, 4, moh=moh)


def test_bad_shapes_name_the_arguments():
    mix = _mixture(4, 1, 2)
    with pytest.raises(ValueError, match=r"expected x \(\.\.\., 16\) and heads \(\.\.\., 4, head_dim\)"):
        mix(torch.randn(2, 5, 16), torch.randn(2, 5, 3, 4))
    with pytest.raises(ValueError, match="HeadMixture"):
        mix(torch.randn(2, 5, 16), torch.randn(2, 5, 4))


def test_compile_fullgraph_and_export_with_dynamic_sizes():
    torch.manual_seed(0)
    m = create_mixer("global", 32, 4, moh=dict(shared_heads=1, routed_heads=2)).train()
    x = torch.randn(2, 7, 9, 32)
    eager = m(x)
    eager_aux = m.moh.aux_loss
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), eager)
    torch.testing.assert_close(m.moh.aux_loss, eager_aux)  # the side effect is replayed
    m.eval()
    dims = {"x": {1: torch.export.Dim("h", min=2, max=64), 2: torch.export.Dim("w", min=2, max=64)}}
    exported = torch.export.export(m, (x,), dynamic_shapes=dims)
    y = torch.randn(2, 11, 5, 32)
    torch.testing.assert_close(exported.module()(y), m(y), rtol=1e-5, atol=1e-5)


def test_copy_after_a_training_step_drops_the_recorded_loss():
    m = create_mixer("global", 32, 4, moh=dict(shared_heads=1, routed_heads=2)).train()
    m(torch.randn(1, 3, 3, 32))
    assert m.moh.aux_loss is not None
    clone = copy.deepcopy(m)  # a non-leaf tensor attribute would refuse deepcopy
    assert clone.moh.aux_loss is None and m.moh.aux_loss is not None
    torch.testing.assert_close(clone.eval()(torch.ones(1, 2, 2, 32)), m.eval()(torch.ones(1, 2, 2, 32)))
