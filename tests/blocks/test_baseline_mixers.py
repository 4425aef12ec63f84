"""PoolMixer, DWConvMixer and GlobalAttention against naive loops over positions and heads."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks.baseline_mixers import DWConvMixer, GlobalAttention, PoolMixer


def naive_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    b, h, w, c = x.shape
    out = torch.zeros_like(x)
    r = k // 2
    for i in range(h):
        for j in range(w):
            window = [x[:, ii, jj] for ii in range(i - r, i + r + 1) for jj in range(j - r, j + r + 1)
                      if 0 <= ii < h and 0 <= jj < w]
            out[:, i, j] = torch.stack(window).mean(0) - x[:, i, j]
    return out


def naive_dwconv(x: torch.Tensor, m: DWConvMixer) -> torch.Tensor:
    b, h, w, c = x.shape
    weight, bias = m.conv.weight[:, 0], m.conv.bias  # (C, k, k)
    k = weight.shape[-1]
    r = k // 2
    out = bias.expand(b, h, w, c).clone()
    for i in range(h):
        for j in range(w):
            for di in range(k):
                for dj in range(k):
                    ii, jj = i + di - r, j + dj - r
                    if 0 <= ii < h and 0 <= jj < w:
                        out[:, i, j] = out[:, i, j] + x[:, ii, jj] * weight[:, di, dj]
    return out


def naive_global(x: torch.Tensor, m: GlobalAttention) -> torch.Tensor:
    b, h, w, c = x.shape
    heads, d = m.num_heads, c // m.num_heads
    tokens = x.reshape(b, h * w, c)
    out = torch.zeros_like(tokens)
    for bi in range(b):
        qkv = tokens[bi] @ m.qkv.weight.T + m.qkv.bias
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
        heads_out = []
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            rows = []
            for n in range(h * w):
                logits = torch.stack([q[n, sl] @ k[mm, sl] for mm in range(h * w)]) / math.sqrt(d)
                rows.append(torch.softmax(logits, 0) @ v[:, sl])
            heads_out.append(torch.stack(rows))
        out[bi] = torch.cat(heads_out, -1) @ m.proj.weight.T + m.proj.bias
    return out.view(b, h, w, c)


@pytest.mark.parametrize("hw, k", [((5, 7), 3), ((1, 4), 3), ((6, 6), 5)])
def test_pool_mixer_matches_naive(hw, k):
    x = torch.randn(2, *hw, 4, dtype=torch.float64)
    torch.testing.assert_close(PoolMixer(4, k)(x), naive_pool(x, k))


@pytest.mark.parametrize("hw", [(5, 7), (2, 3)])
def test_dwconv_mixer_matches_naive(hw):
    m = DWConvMixer(4, kernel_size=5).double()
    x = torch.randn(2, *hw, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_dwconv(x, m))


@pytest.mark.parametrize("hw, heads", [((3, 5), 2), ((1, 1), 1), ((4, 2), 4)])
def test_global_attention_matches_naive(hw, heads):
    m = GlobalAttention(8, heads).double().eval()
    with torch.no_grad():
        m.qkv.bias.normal_()
    x = torch.randn(2, *hw, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_global(x, m))


def test_bad_arguments():
    with pytest.raises(ValueError, match="pool_size must be a positive odd int"):
        PoolMixer(4, 2)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
        DWConvMixer(4, 4)
    with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by num_heads \(3\)"):
        GlobalAttention(10, 3)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 8\)"):
        GlobalAttention(8, 2)(torch.randn(1, 8, 3, 3))
