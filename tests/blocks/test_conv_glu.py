"""ConvGLU against a naive reference (explicit 3x3 neighbourhood sums instead of a convolution)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.conv_glu import ConvGLU, glu_hidden_features


def naive_conv_glu(m: ConvGLU, x: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = x.shape
    hidden = m.hidden_features
    y = x @ m.fc1.weight.t() + m.fc1.bias
    gate, value = y[..., :hidden], y[..., hidden:]  # first half is the gate branch
    k = m.dwconv.weight.shape[-1]
    pad = k // 2
    conv = m.dwconv.bias.expand(b, h, w, hidden).clone()
    for i in range(h):
        for j in range(w):
            for di in range(k):
                for dj in range(k):
                    ii, jj = i + di - pad, j + dj - pad
                    if 0 <= ii < h and 0 <= jj < w:
                        conv[:, i, j] = conv[:, i, j] + gate[:, ii, jj] * m.dwconv.weight[:, 0, di, dj]
    return (F.gelu(conv) * value) @ m.fc2.weight.t() + m.fc2.bias


@pytest.mark.parametrize("size", [(5, 7), (1, 3), (4, 4)])
def test_conv_glu_matches_naive(size):
    torch.manual_seed(0)
    m = ConvGLU(8, 6, out_features=5).double()
    with torch.no_grad():
        m.dwconv.bias.normal_()
    x = torch.randn(2, *size, 8, dtype=torch.float64, requires_grad=True)
    out = m(x)
    ref = naive_conv_glu(m, x)
    assert out.shape == (2, *size, 5)
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_hidden_width_matches_transnext_table():
    # reference facts: (C, ratio) -> h: 48*8 -> 256, 72*8 -> 384, 288*4 -> 768, 768*4 -> 2048
    assert [glu_hidden_features(c, r) for c, r in [(48, 8), (72, 8), (288, 4), (768, 4)]] == [256, 384, 768, 2048]


def test_conv_glu_bad_input():
    m = ConvGLU(8, 4)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        m(torch.randn(2, 8, 5))
    with pytest.raises(ValueError, match="odd"):
        ConvGLU(8, 4, kernel_size=4)
