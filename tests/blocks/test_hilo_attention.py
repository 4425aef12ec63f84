"""HiLoAttention against a naive reference written here: explicit loops over the Hi-Fi windows with the padding
rule spelled out pixel by pixel, an explicit Lo-Fi pooling cell by cell, per-head softmax of explicit dot
products; both mask modes, all head splits (alpha 0 / mixed / 1, window 1 = global), odd and divisible sizes."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks import HiLoAttention


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    y = x @ layer.weight.T
    return y if layer.bias is None else y + layer.bias


def _softmax_attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """One query vector q (d,) over keys/values (n, d)."""
    logits = torch.stack([scale * torch.dot(q, k) for k in keys])
    p = torch.exp(logits - logits.max())
    p = p / p.sum()
    return (p[:, None] * values).sum(0)


def naive_hilo(x: torch.Tensor, m: HiLoAttention, mask_padding: bool) -> torch.Tensor:
    B, H, W, C = x.shape
    s, d = m.window_size, m.head_dim
    parts = []
    if m.hifi_heads:
        out = torch.zeros(B, H, W, m.hifi_dim, dtype=x.dtype)
        rows, cols = math.ceil(H / s), math.ceil(W / s)
        for n in range(B):
            for wr in range(rows):
                for wc in range(cols):
                    pixels = [(wr * s + i, wc * s + j) for i in range(s) for j in range(s)]
                    inside = [py < H and px < W for py, px in pixels]
                    # official: a padded pixel is a zero input vector, projected like any other
                    tokens = torch.stack(
                        [x[n, py, px] if ok else torch.zeros(C) for (py, px), ok in zip(pixels, inside)]
                    )
                    qkv = _linear(tokens, m.hifi_qkv)  # (s*s, 3 * hifi_dim): [q | k | v], head-major
                    q, k, v = qkv.split(m.hifi_dim, dim=-1)
                    keep = [i for i, ok in enumerate(inside) if ok or not mask_padding]
                    for qi, ((py, px), ok) in enumerate(zip(pixels, inside)):
                        if not ok:
                            continue
                        for h in range(m.hifi_heads):
                            sl = slice(h * d, (h + 1) * d)
                            out[n, py, px, sl] = _softmax_attend(q[qi, sl], k[keep, sl], v[keep, sl], m.scale)
        parts.append(_linear(out, m.hifi_proj))
    if m.lofi_heads:
        out = torch.zeros(B, H, W, m.lofi_dim, dtype=x.dtype)
        for n in range(B):
            if s == 1:
                pooled = x[n].reshape(H * W, C)
            else:
                cells = []
                for pr in range(math.ceil(H / s)):
                    for pc in range(math.ceil(W / s)):
                        real = [x[n, py, px] for py in range(pr * s, pr * s + s) for px in range(pc * s, pc * s + s)
                                if py < H and px < W]
                        total = torch.stack(real).sum(0)
                        # masked: mean of the real pixels; official: zeros padded in, divided by s*s
                        cells.append(total / (len(real) if mask_padding else s * s))
                pooled = torch.stack(cells)
            k, v = _linear(pooled, m.lofi_kv).split(m.lofi_dim, dim=-1)
            q = _linear(x[n], m.lofi_q)  # (H, W, lofi_dim)
            for py in range(H):
                for px in range(W):
                    for h in range(m.lofi_heads):
                        sl = slice(h * d, (h + 1) * d)
                        out[n, py, px, sl] = _softmax_attend(q[py, px, sl], k[:, sl], v[:, sl], m.scale)
        parts.append(_linear(out, m.lofi_proj))
    return torch.cat(parts, dim=-1)  # Hi-Fi channels first


# (kwargs, H, W, expected (hifi heads, lofi heads))
CASES = [
    (dict(dim=24, num_heads=4, window_size=2, alpha=0.5), 5, 7, (2, 2)),
    (dict(dim=24, num_heads=4, window_size=2, alpha=0.5), 6, 4, (2, 2)),
    (dict(dim=36, num_heads=6, window_size=3, alpha=0.7), 7, 5, (2, 4)),  # int(4.2) = 4
    (dict(dim=48, num_heads=12, window_size=2, alpha=0.9), 3, 5, (2, 10)),  # LITv2's stage-3 split
    (dict(dim=16, num_heads=2, window_size=2, alpha=0.0), 5, 3, (2, 0)),  # Hi-Fi only
    (dict(dim=16, num_heads=2, window_size=3, alpha=1.0), 4, 8, (0, 2)),  # Lo-Fi only
    (dict(dim=16, num_heads=2, window_size=1, alpha=0.3), 3, 4, (0, 2)),  # window 1: global attention
    (dict(dim=12, num_heads=2, window_size=4, alpha=0.5, qkv_bias=False), 2, 3, (1, 1)),  # map smaller than s
]


def _randomized(m: HiLoAttention) -> HiLoAttention:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)  # non-zero biases: padded keys carry the bias in the official mode
    return m.eval()


@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("kwargs,H,W,split", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_naive_reference(kwargs, H, W, split, mask_padding):
    torch.manual_seed(0)
    m = _randomized(HiLoAttention(**kwargs, mask_padding=mask_padding))
    assert (m.hifi_heads, m.lofi_heads) == split
    x = torch.randn(2, H, W, kwargs["dim"])
    with torch.no_grad():
        out = m(x)
        ref = naive_hilo(x, m, mask_padding)
    assert out.shape == (2, H, W, kwargs["dim"])
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_mask_modes_differ_only_when_padding_happens():
    torch.manual_seed(0)
    a = _randomized(HiLoAttention(24, num_heads=4, window_size=2, alpha=0.5, mask_padding=True))
    b = HiLoAttention(24, num_heads=4, window_size=2, alpha=0.5, mask_padding=False).eval()
    b.load_state_dict(a.state_dict())
    even, odd = torch.randn(1, 6, 8, 24), torch.randn(1, 5, 7, 24)
    with torch.no_grad():
        torch.testing.assert_close(a(even), b(even))
        assert not torch.allclose(a(odd), b(odd), atol=1e-4)


def test_gradients_and_no_ws_dependent_parameters():
    torch.manual_seed(0)
    m2 = HiLoAttention(24, num_heads=4, window_size=2, alpha=0.5)
    m4 = HiLoAttention(24, num_heads=4, window_size=4, alpha=0.5)
    m4.load_state_dict(m2.state_dict(), strict=True)  # the window size can change at fine-tuning time
    x = torch.randn(2, 7, 9, 24, requires_grad=True)
    m2(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.any() for p in m2.parameters())


def test_bad_input_and_arguments():
    m = HiLoAttention(16, num_heads=2)
    with pytest.raises(ValueError, match=r"\(B, H, W, 16\)"):
        m(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        HiLoAttention(16, num_heads=3)
    with pytest.raises(ValueError, match="alpha"):
        HiLoAttention(16, num_heads=2, alpha=1.5)
    with pytest.raises(ValueError, match="window_size"):
        HiLoAttention(16, num_heads=2, window_size=0)
