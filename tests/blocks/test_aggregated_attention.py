"""AggregatedAttention / LengthScaledAttention against naive references.

The references build every query's key set explicitly (Python loops over pixels and window positions, skipping
positions outside the map), pool with explicit bin averages, compute the position bias one (query, key) pair at a
time from the coordinates, and for the "interpolate" mode resize a reference-size bias with two F.interpolate
calls as the official dense backbones do. Everything runs in float64 on tiny maps.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.aggregated_attention import (
    AggregatedAttention,
    LengthScaledAttention,
    _NeighbourhoodAggregate,
    _NeighbourhoodLogits,
)

# ------------------------------------------------------------------------------------------------ naive pieces


def bins(n: int, m: int) -> list[tuple[int, int]]:
    """Adaptive-average-pool bins [start, end) of n positions into m."""
    return [(math.floor(a * n / m), math.ceil((a + 1) * n / m)) for a in range(m)]


def naive_cpb(attn, query_hw, key_hw) -> torch.Tensor:
    """(heads, Nq, Nk) bias from explicit per-pair coordinates; keys at their pooling bins' centroids."""
    (hq, wq), (hk, wk) = query_hw, key_hw
    ph, pw = attn.pretrain_grid
    cent_h = [(s + e - 1) / 2 for s, e in bins(hq, hk)]
    cent_w = [(s + e - 1) / 2 for s, e in bins(wq, wk)]
    coords = torch.empty(hq * wq, hk * wk, 2, dtype=torch.float64)
    for i in range(hq):
        for j in range(wq):
            for a in range(hk):
                for c in range(wk):
                    for axis, d in enumerate(((i - cent_h[a]) / (ph - 1) * 8, (j - cent_w[c]) / (pw - 1) * 8)):
                        coords[i * wq + j, a * wk + c, axis] = math.copysign(math.log2(1 + abs(d)) / 3, d)
    hidden = F.relu(coords.to(attn.cpb_fc1.weight.dtype) @ attn.cpb_fc1.weight.t() + attn.cpb_fc1.bias)
    return (hidden @ attn.cpb_fc2.weight.t() + attn.cpb_fc2.bias).permute(2, 0, 1)


def naive_bias(attn, query_hw, key_hw, ref_key_hw=None) -> torch.Tensor:
    if attn.pos_bias_mode == "extrapolate":
        return naive_cpb(attn, query_hw, key_hw)
    ref_q, ref_k = attn.pos_bias_grid, ref_key_hw
    bias = naive_cpb(attn, ref_q, ref_k)  # (heads, Nq_ref, Nk_ref)
    heads, nq_ref = bias.shape[:2]
    # official order: resize over the key grid, then over the query grid (bilinear, align_corners=False)
    bias = F.interpolate(bias.reshape(heads * nq_ref, 1, *ref_k), size=key_hw, mode="bilinear")
    nk = key_hw[0] * key_hw[1]
    bias = bias.reshape(heads, nq_ref, nk).transpose(1, 2).reshape(heads * nk, 1, *ref_q)
    bias = F.interpolate(bias, size=query_hw, mode="bilinear")
    return bias.reshape(heads, nk, -1).transpose(1, 2)


def naive_pooled_tokens(attn: AggregatedAttention, x: torch.Tensor, pool_hw) -> torch.Tensor:
    _, h, w, c = x.shape
    y = F.gelu(x @ attn.pool_proj.weight[:, :, 0, 0].t() + attn.pool_proj.bias)
    tokens = [y[:, r0:r1, c0:c1].mean(dim=(1, 2)) for r0, r1 in bins(h, pool_hw[0]) for c0, c1 in bins(w, pool_hw[1])]
    tokens = torch.stack(tokens, dim=1)
    return F.layer_norm(tokens, (c,), attn.pool_norm.weight, attn.pool_norm.bias, eps=1e-5)


def naive_aggregated_attention(attn: AggregatedAttention, x: torch.Tensor, pool_hw) -> torch.Tensor:
    b, h, w, c = x.shape
    heads, d, k = attn.num_heads, attn.head_dim, attn.window_size
    pad = k // 2
    q = (x @ attn.q.weight.t() + attn.q.bias).view(b, h, w, heads, d)
    kv = x @ attn.kv.weight.t() + attn.kv.bias
    keys, values = kv[..., :c].view(b, h, w, heads, d), kv[..., c:].view(b, h, w, heads, d)
    kvp = naive_pooled_tokens(attn, x, pool_hw) @ attn.kv.weight.t() + attn.kv.bias
    num_pooled = kvp.shape[1]
    keys_p, values_p = kvp[..., :c].view(b, -1, heads, d), kvp[..., c:].view(b, -1, heads, d)
    ref_pool = attn.pool_size(*attn.pos_bias_grid) if attn.pos_bias_mode == "interpolate" else None
    bias = naive_bias(attn, (h, w), pool_hw, ref_pool)

    out = torch.zeros(b, h, w, heads, d, dtype=x.dtype)
    for bi in range(b):
        for hi in range(heads):
            tau = F.softplus(attn.temperature[hi, 0, 0])
            e = attn.query_embedding[hi, 0]
            for i in range(h):
                for j in range(w):
                    qn = F.normalize(q[bi, i, j, hi], dim=0)
                    window = []  # (z, key, value) of the positions inside the map
                    for z in range(k * k):
                        ii, jj = i + z // k - pad, j + z % k - pad
                        if 0 <= ii < h and 0 <= jj < w:
                            window.append((z, keys[bi, ii, jj, hi], values[bi, ii, jj, hi]))
                    qs = (qn + e) * tau * math.log(len(window) + num_pooled)
                    logits = [qs @ F.normalize(kk, dim=0) + attn.relative_pos_bias_local[hi, z] for z, kk, _ in window]
                    logits += [
                        qs @ F.normalize(keys_p[bi, l, hi], dim=0) + bias[hi, i * w + j, l] for l in range(num_pooled)
                    ]
                    p = torch.softmax(torch.stack(logits), dim=0)
                    acc = 0
                    for n, (z, _, vv) in enumerate(window):
                        acc = acc + (p[n] + qn @ attn.learnable_tokens[hi, :, z] + attn.learnable_bias[hi, 0, z]) * vv
                    for l in range(num_pooled):
                        acc = acc + p[len(window) + l] * values_p[bi, l, hi]
                    out[bi, i, j, hi] = acc
    return out.view(b, h, w, c) @ attn.proj.weight.t() + attn.proj.bias


def naive_full_attention(attn: LengthScaledAttention, x: torch.Tensor) -> torch.Tensor:
    b, h, w, c = x.shape
    heads, d, n = attn.num_heads, attn.head_dim, h * w
    qkv = (x @ attn.qkv.weight.t() + attn.qkv.bias).view(b, n, 3, heads, d)
    bias = naive_bias(attn, (h, w), (h, w), attn.pos_bias_grid)
    out = torch.zeros(b, n, heads, d, dtype=x.dtype)
    for bi in range(b):
        for hi in range(heads):
            tau = F.softplus(attn.temperature[hi, 0, 0])
            for i in range(n):
                qs = (F.normalize(qkv[bi, i, 0, hi], dim=0) + attn.query_embedding[hi, 0]) * tau * math.log(n)
                logits = torch.stack([qs @ F.normalize(qkv[bi, j, 1, hi], dim=0) + bias[hi, i, j] for j in range(n)])
                out[bi, i, hi] = torch.softmax(logits, 0) @ qkv[bi, :, 2, hi]
    return out.reshape(b, h, w, c) @ attn.proj.weight.t() + attn.proj.bias


def _randomize(module: torch.nn.Module) -> None:
    """Non-trivial values for the parameters that are zero or near-constant at init."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(k in name for k in ("bias", "learnable", "temperature", "query_embedding")):
                p.normal_(0, 0.5)


# ------------------------------------------------------------------------------------------------------ tests

AA_CASES = {
    # name: (kwargs, input H, W)
    "extrapolate_odd": (dict(window_size=3, pool_ratio=4, pretrain_grid=8), 9, 11),
    "window5_small_map": (dict(window_size=5, pool_ratio=2, pretrain_grid=(5, 6)), 3, 4),
    "map_smaller_than_ratio": (dict(window_size=3, pool_ratio=8, pretrain_grid=4), 5, 6),
    "fixed_pool": (dict(window_size=3, pool_ratio=4, fixed_pool_size=(2, 3), pretrain_grid=8), 7, 6),
    "interpolate_up": (dict(window_size=3, pool_ratio=2, pos_bias_mode="interpolate", pos_bias_grid=5), 8, 7),
    "interpolate_down": (dict(window_size=3, pool_ratio=2, pos_bias_mode="interpolate", pos_bias_grid=(9, 8)), 6, 5),
}


@pytest.fixture(params=list(AA_CASES))
def aa_case(request):
    kwargs, h, w = AA_CASES[request.param]
    torch.manual_seed(0)
    kwargs = dict(dict(pretrain_grid=6), **kwargs)
    attn = AggregatedAttention(12, num_heads=2, **kwargs).double()
    _randomize(attn)
    x = torch.randn(2, h, w, 12, dtype=torch.float64, requires_grad=True)
    return attn, x


def test_aggregated_attention_matches_naive(aa_case):
    """Outputs and the gradients of the input and of every parameter."""
    attn, x = aa_case
    out = attn(x)
    ref = naive_aggregated_attention(attn, x, attn.pool_size(x.shape[1], x.shape[2]))
    torch.testing.assert_close(out, ref)
    params = [x] + list(attn.parameters())
    g = torch.autograd.grad(out.sin().sum(), params)
    g_ref = torch.autograd.grad(ref.sin().sum(), params)
    names = ["x"] + [n for n, _ in attn.named_parameters()]
    for n, a, r in zip(names, g, g_ref):
        torch.testing.assert_close(a, r, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("window_size,hw", [(3, (4, 5)), (5, (3, 2)), (1, (2, 3))])
def test_neighbourhood_functions_gradcheck(window_size, hw):
    torch.manual_seed(0)
    q = torch.randn(2, *hw, 2, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, *hw, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, *hw, 2, window_size**2, dtype=torch.float64, requires_grad=True)

    def logits(q, k):  # off-map entries are -inf; compare the finite ones
        out = _NeighbourhoodLogits.apply(q, k, window_size)
        return torch.where(torch.isfinite(out), out, torch.zeros_like(out))

    assert torch.autograd.gradcheck(logits, (q, k))
    assert torch.autograd.gradcheck(lambda w, v: _NeighbourhoodAggregate.apply(w, v, window_size), (w, k))


@pytest.mark.parametrize("mode", ["extrapolate", "interpolate"])
@pytest.mark.parametrize("fused", [True, False])
def test_length_scaled_attention_matches_naive(mode, fused):
    torch.manual_seed(0)
    kwargs = dict(pos_bias_mode=mode, pos_bias_grid=(4, 3) if mode == "interpolate" else None)
    attn = LengthScaledAttention(12, num_heads=3, pretrain_grid=4, fused_attn=fused, **kwargs).double()
    _randomize(attn)
    x = torch.randn(2, 3, 5, 12, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    ref = naive_full_attention(attn, x)
    torch.testing.assert_close(out, ref)
    params = [x] + list(attn.parameters())
    for a, r in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, r)


def test_modes_agree_at_the_reference_size():
    torch.manual_seed(0)
    ext = AggregatedAttention(24, num_heads=2, pool_ratio=4, pretrain_grid=14)
    itp = AggregatedAttention(
        24, num_heads=2, pool_ratio=4, pretrain_grid=14, pos_bias_mode="interpolate", pos_bias_grid=(12, 16)
    )
    itp.load_state_dict(ext.state_dict())
    x = torch.randn(1, 12, 16, 24)
    torch.testing.assert_close(itp(x), ext(x), rtol=0, atol=0)
    assert not torch.allclose(itp(x[:, :9, :10]), ext(x[:, :9, :10]))  # the modes differ elsewhere


def test_init_values_follow_the_paper():
    attn = AggregatedAttention(48, num_heads=2)
    torch.testing.assert_close(F.softplus(attn.temperature), torch.full((2, 1, 1), 1 / 0.24))
    assert attn.learnable_bias.abs().sum() == 0
    assert attn.relative_pos_bias_local.std() < 2e-3
    shapes = {n: tuple(p.shape) for n, p in attn.named_parameters()}
    assert shapes["learnable_tokens"] == (2, 24, 9) and shapes["query_embedding"] == (2, 1, 24)
    assert shapes["cpb_fc1.weight"] == (512, 2) and shapes["cpb_fc2.weight"] == (2, 512)


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="window_size"):
        AggregatedAttention(12, num_heads=2, window_size=4)
    with pytest.raises(ValueError, match="divisible"):
        AggregatedAttention(12, num_heads=5)
    with pytest.raises(ValueError, match="pos_bias_grid"):
        AggregatedAttention(12, num_heads=2, pos_bias_mode="interpolate")
    with pytest.raises(ValueError, match="pos_bias_mode"):
        LengthScaledAttention(12, num_heads=2, pos_bias_mode="linear")
    with pytest.raises(ValueError, match=r"\(B, H, W, 12\)"):
        AggregatedAttention(12, num_heads=2)(torch.randn(1, 12, 5, 5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_is_finite_and_close(dtype):
    torch.manual_seed(0)
    attn = AggregatedAttention(48, num_heads=2, pool_ratio=4, pretrain_grid=8).eval()
    x = torch.randn(2, 17, 23, 48)
    with torch.no_grad():
        ref = attn(x)
        with torch.autocast("cpu", dtype=dtype):
            out = attn(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("n_query", [1, 7, 13, 50, 56])
def test_symbolic_size_plan_gives_every_pair_its_offset(n_query):
    """The plan built for symbolic sizes (torch.export; no torch.unique): every (query, key) pair reads the table
    entry of its own offset, written out here from the adaptive-pool bins, and the table stays small."""
    from backbones.blocks._position_bias import _axis_plan_symbolic, adaptive_pool_matrix

    pretrain = 56
    for n_key in sorted({1, 2, max(1, n_query // 8), max(1, n_query // 3), n_query}):
        values, index, weight = _axis_plan_symbolic(n_query, n_key, pretrain)
        assert index.shape == (n_query, n_key, 1) and torch.all(weight == 1)
        for j in range(n_key):
            lo, hi = math.floor(j * n_query / n_key), math.ceil((j + 1) * n_query / n_key)
            centroid = sum(range(lo, hi)) / (hi - lo)
            for i in range(n_query):
                assert values[index[i, j, 0]].item() == (i - centroid) / (pretrain - 1) * 8
        assert len(values) <= 4 * n_query  # half-integer steps over offsets in (-n, n)
        # the bin-averaging matrix of the traced pool: the same bins, rows summing to 1
        matrix = adaptive_pool_matrix(n_query, n_key, torch.empty(0, dtype=torch.float64))
        x = torch.randn(n_query, dtype=torch.float64)
        torch.testing.assert_close(matrix @ x, F.adaptive_avg_pool1d(x[None, None], n_key)[0, 0])
