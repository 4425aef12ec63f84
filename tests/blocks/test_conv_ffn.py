"""ConvFFN against a naive reference: per-pixel matrix products and a depthwise convolution written as explicit
loops over each pixel's k x k neighbourhood (zero outside the map), exact-erf GELU."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks import ConvFFN


def naive_conv_ffn(x: torch.Tensor, m: ConvFFN) -> torch.Tensor:
    B, H, W, _ = x.shape
    hid = x @ m.fc1.weight.T + m.fc1.bias  # (B, H, W, h)
    k = m.dwconv.kernel_size[0]
    r = k // 2
    conv = torch.zeros_like(hid)
    for y in range(H):
        for x_ in range(W):
            acc = m.dwconv.bias.expand(B, -1).clone()
            for i in range(k):
                for j in range(k):
                    yy, xx = y + i - r, x_ + j - r
                    if 0 <= yy < H and 0 <= xx < W:
                        acc = acc + hid[:, yy, xx] * m.dwconv.weight[:, 0, i, j]
            conv[:, y, x_] = acc
    act = 0.5 * conv * (1 + torch.erf(conv / math.sqrt(2)))
    return act @ m.fc2.weight.T + m.fc2.bias


@pytest.mark.parametrize("kernel_size,H,W", [(3, 5, 7), (5, 4, 3)])
def test_matches_naive(kernel_size, H, W):
    torch.manual_seed(0)
    m = ConvFFN(6, 12, out_features=5, kernel_size=kernel_size).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, H, W, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_conv_ffn(x, m), rtol=1e-4, atol=1e-5)


def test_official_init_and_errors():
    m = ConvFFN(8, 32)
    m.init_dwconv()
    assert not m.dwconv.bias.any()
    assert 0.3 < m.dwconv.weight.std().item() < 0.65  # N(0, sqrt(2/9)) = 0.47
    with pytest.raises(ValueError, match=r"\(B, H, W, 8\)"):
        m(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        ConvFFN(8, 32, kernel_size=2)
