"""BiLevelRoutingAttention against a naive reference that loops over regions and builds each attended set."""

from __future__ import annotations

import pytest
import torch
from biformer_naive import naive_bra_module

import backbones.blocks.bilevel_routing_attention as bra_module
from backbones.blocks.bilevel_routing_attention import BiLevelRoutingAttention
from backbones.models._biformer_reference import official_bra


def _make(dim=16, heads=2, regions=3, topk=2, seed=0, **kwargs) -> BiLevelRoutingAttention:
    torch.manual_seed(seed)
    attn = BiLevelRoutingAttention(dim, heads, num_regions=regions, topk=topk, **kwargs).double()
    with torch.no_grad():  # non-trivial biases: padded tokens carry them in the official mode
        for p in attn.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.5)
    return attn


# (H, W, num_regions, topk, heads, qk_dim): divisible sizes, padded sizes, regions of one token, whole regions of
# padding (7 x 5 with S = 4: region size 2 x 2, the last region row/column is partly or wholly padding).
SHAPES = [
    (9, 12, 3, 2, 2, None),
    (10, 13, 3, 4, 2, None),
    (7, 5, 4, 3, 4, None),
    (3, 3, 3, 9, 1, None),
    (11, 8, 2, 1, 2, 8),
    (6, 7, 4, 16, 2, None),
]


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("h, w, regions, topk, heads, qk_dim", SHAPES)
def test_matches_naive_reference(h, w, regions, topk, heads, qk_dim, mask_padding):
    attn = _make(heads=heads, regions=regions, topk=topk, qk_dim=qk_dim, mask_padding=mask_padding)
    x = torch.randn(2, h, w, 16, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_bra_module(x, attn), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_padding_mode_matters_only_when_padded(mask_padding):
    official = _make(mask_padding=False)
    masked = _make(mask_padding=True)
    with torch.no_grad():
        x = torch.randn(1, 9, 12, 16, dtype=torch.double)  # multiples of S = 3: no padding
        torch.testing.assert_close(official(x), masked(x), rtol=1e-12, atol=1e-12)
        x = torch.randn(1, 10, 13, 16, dtype=torch.double)
        assert (official(x) - masked(x)).abs().max() > 1e-3


@pytest.mark.parametrize("mask_padding", [False, True])
def test_tied_routing_scores_go_to_the_lower_region_index(mask_padding):
    """With q = 0 every region affinity is exactly 0: the routed regions must be the first topk (non-empty) ones.

    torch.topk leaves the order of ties unspecified, so this fails for an implementation that relies on it.
    """
    attn = _make(regions=4, topk=3, mask_padding=mask_padding)
    with torch.no_grad():
        attn.qkv.weight[:16].zero_()
        attn.qkv.bias[:16].zero_()
    x = torch.randn(2, 7, 10, 16, dtype=torch.double)  # S = 4: padded, last region column is partly padding
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_bra_module(x, attn), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("avgpool", dict(kv_downsample_ratio=2)),
        ("maxpool", dict(kv_downsample_ratio=2)),
        ("avgpool", dict(kv_downsample_ratio=1)),
        ("ada_avgpool", dict(kv_per_region=2)),
        ("ada_maxpool", dict(kv_per_region=3)),
    ],
)
def test_kv_downsampling_matches_naive(mode, kwargs, mask_padding):
    attn = _make(regions=3, topk=3, kv_downsample_mode=mode, mask_padding=mask_padding, **kwargs)
    x = torch.randn(2, 13, 14, 16, dtype=torch.double)  # regions of 5 x 5 tokens, padded
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_bra_module(x, attn), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_soft_routing_with_projection_matches_naive_and_trains_the_router(mask_padding):
    attn = _make(
        regions=3, topk=3, routing_weight=True, routing_grad=True, routing_proj=True, mask_padding=mask_padding
    )
    x = torch.randn(1, 8, 11, 16, dtype=torch.double)
    names, params = zip(*attn.named_parameters())
    ours = torch.autograd.grad(attn(x).square().sum(), params)
    ref = torch.autograd.grad(naive_bra_module(x, attn).square().sum(), params)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    assert ours[names.index("routing_proj.weight")].abs().sum() > 0  # the router learns


def test_no_output_projection_and_no_lepe():
    attn = _make(proj_out=False, lepe_kernel_size=0, mask_padding=True)
    x = torch.randn(1, 8, 7, 16, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_bra_module(x, attn), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_gradients_match_naive(mask_padding):
    attn = _make(regions=3, topk=2, mask_padding=mask_padding)
    x = torch.randn(1, 8, 10, 16, dtype=torch.double, requires_grad=True)
    params = [x, *attn.parameters()]
    g = torch.randn(1, 8, 10, 16, dtype=torch.double)
    ours = torch.autograd.grad(attn(x), params, g)
    ref = torch.autograd.grad(naive_bra_module(x, attn), params, g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_chunked_gather_same_values_and_gradients(monkeypatch, mask_padding):
    """The CPU path splits routed attention into chunks; tiny chunks must change nothing, forward or backward."""
    attn = _make(dim=32, heads=4, regions=4, topk=5, mask_padding=mask_padding)
    x = torch.randn(2, 13, 11, 32, dtype=torch.double, requires_grad=True)
    g = torch.randn(2, 13, 11, 32, dtype=torch.double)
    params = [x, *attn.parameters()]
    y_one = attn(x)
    grads_one = torch.autograd.grad(y_one, params, g)
    monkeypatch.setattr(bra_module, "_CPU_CHUNK_BYTES", 1)  # one query region per chunk
    y_many = attn(x)
    grads_many = torch.autograd.grad(y_many, params, g)
    torch.testing.assert_close(y_many, y_one, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_many, grads_one):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("h, w", [(56, 56), (28, 28), (30, 41)])
def test_official_formulation_within_1e5_fp32(h, w):
    """The official gather formulation (the benchmark's reference) and ours agree to 1e-5 in fp32."""
    torch.manual_seed(0)
    attn = BiLevelRoutingAttention(64, 2, num_regions=7, topk=4, mask_padding=False)
    x = torch.randn(2, h, w, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), official_bra(attn, x), rtol=0, atol=1e-5)


def test_bf16_autocast_finite_and_close():
    torch.manual_seed(0)
    attn = BiLevelRoutingAttention(32, 2, num_regions=4, topk=3)
    x = torch.randn(1, 30, 37, 32)
    with torch.no_grad():
        ref = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_bad_arguments_raise_clear_errors():
    attn = BiLevelRoutingAttention(16, 2, num_regions=3, topk=2)
    with pytest.raises(ValueError, match=r"\(B, H, W, 16\)"):
        attn(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="topk"):
        BiLevelRoutingAttention(16, 2, num_regions=2, topk=5)
    with pytest.raises(ValueError, match="num_heads"):
        BiLevelRoutingAttention(16, 3)
    with pytest.raises(ValueError, match="kv_downsample_mode"):
        BiLevelRoutingAttention(16, 2, kv_downsample_mode="conv")
    with pytest.raises(ValueError, match="routing_grad"):
        BiLevelRoutingAttention(16, 2, routing_proj=True)
