"""WindowAttention against a slow reference: explicit loops over windows and heads, padding by hand."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks.window_attention import WindowAttention


def naive_window_attention(x: torch.Tensor, attn: WindowAttention) -> torch.Tensor:
    """Loop over every window; out-of-map positions are zero tokens (keys/values), their outputs are dropped."""
    b, h, w, c = x.shape
    wh, ww = attn.window_size
    heads, d = attn.num_heads, c // attn.num_heads
    wq, bq = attn.qkv.weight, attn.qkv.bias
    out = torch.zeros_like(x)
    for bi in range(b):
        for top in range(0, h, wh):
            for left in range(0, w, ww):
                coords = [(top + r, left + s) for r in range(wh) for s in range(ww)]
                tokens = torch.stack([x[bi, i, j] if i < h and j < w else x.new_zeros(c) for i, j in coords])
                qkv = tokens @ wq.T + (bq if bq is not None else 0)
                q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
                heads_out = []
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    weights = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
                    heads_out.append(weights @ v[:, sl])
                y = torch.cat(heads_out, dim=-1) @ attn.proj.weight.T + attn.proj.bias
                for t, (i, j) in enumerate(coords):
                    if i < h and j < w:
                        out[bi, i, j] = y[t]
    return out


@pytest.mark.parametrize(
    "hw, window, heads, fused",
    [
        ((7, 14), 7, 2, True),  # aligned
        ((9, 11), 7, 2, True),  # padded both ways
        ((5, 3), 7, 1, False),  # map smaller than one window, explicit softmax path
        ((6, 10), (3, 4), 4, True),  # rectangular window
        ((10, 9), (3, 4), 4, False),
    ],
)
def test_window_attention_matches_naive(hw, window, heads, fused):
    torch.manual_seed(0)
    attn = WindowAttention(16, heads, window_size=window).eval()
    attn.fused_attn = fused
    with torch.no_grad():
        attn.qkv.bias.normal_()  # non-zero bias: padded tokens then carry non-zero keys/values
        x = torch.randn(2, *hw, 16)
        torch.testing.assert_close(attn(x), naive_window_attention(x, attn), rtol=1e-5, atol=1e-5)


def test_window_attention_is_per_window():
    """Changing a token changes outputs in its own window only (no shift, no leakage across windows)."""
    attn = WindowAttention(8, 2, window_size=4).eval()
    x = torch.randn(1, 8, 8, 8)
    y = x.clone()
    y[0, 5, 6] += 1.0  # window (1, 1)
    with torch.no_grad():
        diff = (attn(x) - attn(y)).abs().sum(-1)[0]
    assert diff[4:, 4:].gt(0).all() and diff[:4].eq(0).all() and diff[:, :4].eq(0).all()


def test_window_attention_gradients_and_bad_input():
    attn = WindowAttention(8, 2, window_size=3)
    x = torch.randn(1, 5, 4, 8, requires_grad=True)
    attn(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in attn.parameters())
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 8\)"):
        attn(torch.randn(1, 8, 5, 4))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        WindowAttention(10, 3)
