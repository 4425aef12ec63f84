"""The mixer registry: one (B, H, W, C) contract for every mixer, FLOP counters see them, Triton still dispatches.

The numerics of each family mixer are tested against naive references in its own test file; here the registry's
promises are checked: shapes at any size, gradients, the NCHW adapters are views of the same computation, the
family modules are the very classes (so their kernels dispatch), and bad arguments give errors that say why.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from backbones.blocks import (
    AggregatedAttention,
    BiLevelRoutingAttention,
    ChannelAttention,
    ChannelsFirstMixer,
    FocalModulation,
    HaloAttention,
    HiLoAttention,
    LengthScaledAttention,
    LocalWindowAttention,
    WindowAttention,
    create_mixer,
    list_mixers,
)
from backbones.kernels import interpreter_enabled, triton_available

ROOT = Path(__file__).resolve().parents[2]
MIXERS = list_mixers()
PARAMETER_FREE = {"identity", "pool"}
SIZES = [(1, 1), (5, 7), (13, 9)]

# the module each family mixer must be (or wrap): the same class the family uses, so its Triton dispatch applies
FAMILY_CLASS = {
    "window": WindowAttention,
    "channel": ChannelAttention,
    "routed": BiLevelRoutingAttention,
    "hilo": HiLoAttention,
    "aggregated": AggregatedAttention,
    "length_scaled": LengthScaledAttention,
    "focal": FocalModulation,
    "halo": HaloAttention,
    "cascaded": LocalWindowAttention,
}


def _bench_tool():
    spec = importlib.util.spec_from_file_location("_tools_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_registry_lists_every_family_mixer_and_baseline():
    expected = {"identity", "pool", "dwconv", "global", "static", "sigmoid", "linear", "decoupled"} | set(FAMILY_CLASS)
    assert expected <= set(MIXERS)


@pytest.mark.parametrize("name", MIXERS)
def test_contract_any_size_channels_last_and_gradients(name):
    torch.manual_seed(0)
    mixer = create_mixer(name, 32, 2).train()
    for hw in SIZES:
        x = torch.randn(2, *hw, 32, requires_grad=True)
        out = mixer(x)
        assert out.shape == x.shape, (name, hw, out.shape)
        assert torch.isfinite(out).all()
        (out * torch.randn_like(out)).sum().backward()
        if name != "identity" and not (name == "pool" and hw == (1, 1)):  # a 1x1 map pools to itself: pool - x = 0
            assert x.grad is not None and x.grad.abs().sum() > 0
    dead = [n for n, p in mixer.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"{name}: no gradient for {dead}"
    if name in PARAMETER_FREE | {"identity"}:
        assert not list(mixer.parameters())


@pytest.mark.parametrize("name", MIXERS)
def test_mixes_tokens_across_positions(name):
    """Changing one token changes other tokens' outputs (except identity, which mixes nothing)."""
    torch.manual_seed(0)
    mixer = create_mixer(name, 16, 2).eval()
    x = torch.randn(1, 6, 6, 16)
    y = x.clone()
    y[0, 2, 2] += 1.0
    with torch.no_grad():
        diff = (mixer(x) - mixer(y)).abs().sum(-1)[0]
    diff[2, 2] = 0
    assert (diff.sum() > 0) == (name != "identity"), name


@pytest.mark.parametrize("name", sorted(FAMILY_CLASS))
def test_family_mixers_are_the_family_modules(name):
    mixer = create_mixer(name, 32, 2)
    inner = mixer.mixer if isinstance(mixer, ChannelsFirstMixer) else mixer
    assert type(inner) is FAMILY_CLASS[name]


@pytest.mark.parametrize("name", ["focal", "halo", "cascaded"])
def test_nchw_adapter_passes_a_view_and_matches_the_nchw_module(name):
    torch.manual_seed(0)
    mixer = create_mixer(name, 16, 2).eval()
    x = torch.randn(2, 11, 9, 16)
    seen = {}
    handle = mixer.mixer.register_forward_pre_hook(lambda m, args: seen.update(ptr=args[0].data_ptr()))
    with torch.no_grad():
        out = mixer(x)
        handle.remove()
        assert seen["ptr"] == x.data_ptr(), "the NCHW mixer did not get a view of the input"
        ref = mixer.proj(mixer.mixer(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MIXERS)
def test_flop_counters_see_the_mixer(name):
    bench = _bench_tool()
    mixer = create_mixer(name, 32, 2).eval()
    x = torch.randn(1, 14, 14, 32)
    has_weights = any(True for _ in mixer.parameters())
    for counter in ("torch", "fvcore"):
        gmacs = bench.count_gmacs(mixer, x, counter)
        assert gmacs is not None, (name, counter)
        assert (gmacs > 0) == has_weights, (name, counter, gmacs)


def test_torch_flop_counter_counts_global_attention_itself():
    n, c = 14 * 14, 32
    gmacs = _bench_tool().count_gmacs(create_mixer("global", c, 2).eval(), torch.randn(1, 14, 14, c), "torch")
    analytic = 4 * n * c * c + 2 * n * n * c  # qkv + proj, q k^T and a v
    assert gmacs * 1e9 == pytest.approx(analytic, rel=1e-6)


@pytest.mark.skipif(not (triton_available() and (torch.cuda.is_available() or interpreter_enabled())),
                    reason="needs Triton on CUDA or Triton's interpreter")
@pytest.mark.parametrize(
    "name, kwargs, hw",
    [
        ("routed", dict(num_regions=2, topk=2), (5, 7)),
        ("aggregated", dict(pool_ratio=2), (5, 7)),
        ("halo", dict(block_size=4, halo_size=1), (7, 5)),
    ],
)
def test_triton_kernels_dispatch_inside_registry_mixers(name, kwargs, hw, monkeypatch):
    device = "cuda" if torch.cuda.is_available() and not interpreter_enabled() else "cpu"
    torch.manual_seed(0)
    mixer = create_mixer(name, 16, 2, **kwargs).to(device).eval()
    inner = mixer.mixer if isinstance(mixer, ChannelsFirstMixer) else mixer
    x = torch.randn(1, *hw, 16, device=device)
    outs = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("BACKBONES_KERNELS", backend)
        with torch.no_grad():
            outs[backend] = mixer(x)
        assert inner.last_kernel == backend
    torch.testing.assert_close(outs["triton"], outs["torch"], rtol=1e-4, atol=1e-5)


def test_unknown_name_lists_the_known_mixers():
    with pytest.raises(ValueError, match=r"unknown mixer 'glboal' \(did you mean 'global'\?\); known mixers: identity"):
        create_mixer("glboal", 32)


@pytest.mark.parametrize("name", ["global", "window", "routed", "hilo", "aggregated", "halo", "cascaded", "channel"])
def test_head_count_that_does_not_divide_the_width_says_why(name):
    with pytest.raises(ValueError, match=r"num_heads=3\): num_heads must divide dim, because every head takes"):
        create_mixer(name, 32, 3)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['window'\]; 'cascaded' takes window_size"):
        create_mixer("cascaded", 32, 2, window=7)
    with pytest.raises(TypeError, match=r"'channel' takes num_groups, qkv_bias, v2"):
        create_mixer("channel", 32, 2, groups=4)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        create_mixer("global", 0)
    with pytest.raises(ValueError, match="topk=50 must lie in 1..num_regions"):
        create_mixer("routed", 32, 2, topk=50)
    with pytest.raises(ValueError, match="stride=1, dim_out=dim"):
        create_mixer("halo", 32, 2, stride=2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 32\)"):
        create_mixer("focal", 32)(torch.randn(1, 32, 4, 4))


def test_mixers_without_heads_ignore_num_heads_and_default_heads():
    assert create_mixer("focal", 30, 7) is not None  # focal modulation has no heads
    assert create_mixer("global", 64).num_heads == 2  # dim // 32
    assert create_mixer("global", 48).num_heads == 1


def test_any_size_map_shapes_of_strided_layouts():
    """Non-contiguous channels-last input (e.g. a permuted NCHW map) is taken as well."""
    x = torch.randn(2, 16, 9, 7).permute(0, 2, 3, 1)
    for name in MIXERS:
        assert create_mixer(name, 16, 2).eval()(x).shape == (2, 9, 7, 16), name
    assert math.prod(x.shape) == 2 * 16 * 63


def test_docs_table_lists_every_mixer():
    text = (ROOT / "docs" / "hybrids.md").read_text()
    missing = [n for n in MIXERS if f"\n| {n} |" not in text]
    assert not missing, f"docs/hybrids.md: add {missing} to the mixer table"
