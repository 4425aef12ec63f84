"""RALA and its softmax twin against per-token loops written from the RAVLT paper / official formulation.

The reference works token by token and head by head in float64: explicit 2x2 rotations per channel pair (angle =
row or column index times 10000^(-j / (d/4 - 1)), rounded to fp32 as the official buffer), the key weights as a
softmax of the mean query, the official order of scaling (k * a * N, buffer / N), a depthwise-conv loop for LePE.
"""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks import RankAugmentedLinearAttention, RoPEGatedAttention, create_mixer
from backbones.blocks.rank_augmented_attention import rope_2d


def naive_rotate(vec: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """Rotate pairs of one head vector (d,): pairs of the first half by the row, of the second half by the column."""
    d = vec.numel()
    out = vec.clone()
    quarter = d // 4
    for p in range(d // 2):  # pair p = channels (2p, 2p + 1)
        j = p % quarter  # frequency index: pair p of either half uses the (p mod d/4)-th frequency
        # the official frequencies, 1 / 10000^linspace(0, 1, d/4), are made in fp32 (a buffer cast with the model)
        theta = (1.0 / 10000.0 ** torch.linspace(0, 1, quarter, dtype=torch.float32))[j].item()
        pos = row if p < d // 4 else col
        c, s = math.cos(pos * theta), math.sin(pos * theta)
        a, b = vec[2 * p].item(), vec[2 * p + 1].item()
        out[2 * p], out[2 * p + 1] = a * c - b * s, a * s + b * c
    return out


def naive_dwconv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise 'same' convolution by loops; x (H, W, C), weight (C, 1, k, k)."""
    h, w, c = x.shape
    k = weight.shape[-1]
    out = bias.expand(h, w, c).clone()
    for i in range(h):
        for j in range(w):
            for di in range(k):
                for dj in range(k):
                    y, xx = i + di - k // 2, j + dj - k // 2
                    if 0 <= y < h and 0 <= xx < w:
                        out[i, j] += weight[:, 0, di, dj] * x[y, xx]
    return out


def naive_mixer(mixer, x: torch.Tensor, linear: bool) -> torch.Tensor:
    """One image x (H, W, C) through the mixer's weights, token by token."""
    h, w, c = x.shape
    heads, d = mixer.num_heads, c // mixer.num_heads
    n = h * w
    proj = x @ mixer.qkvo.weight.T + mixer.qkvo.bias
    q, k, v, gate = proj[..., :c], proj[..., c : 2 * c], proj[..., 2 * c : 3 * c], proj[..., 3 * c :]
    lepe = naive_dwconv(v, mixer.lepe.weight, mixer.lepe.bias)
    pos = [(i, j) for i in range(h) for j in range(w)]
    out = torch.zeros(n, c, dtype=x.dtype)
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        qs = [q[i, j, sl] for i, j in pos]
        ks = [k[i, j, sl] for i, j in pos]
        vs = [v[i, j, sl] for i, j in pos]
        if linear:
            qs = [torch.where(t > 0, t + 1, torch.exp(t)) for t in qs]  # elu(t) + 1
            ks = [torch.where(t > 0, t + 1, torch.exp(t)) for t in ks]
            q_mean = sum(qs) / n
            logits = torch.stack([d**-0.5 * torch.dot(q_mean, km) for km in ks])
            a = torch.softmax(logits, 0)
            ks = [km * a[m] * n for m, km in enumerate(ks)]
            k_mean = sum(ks) / n
            buffer = sum(torch.outer(naive_rotate(km, *pos[m]), vs[m]) for m, km in enumerate(ks)) / n
            for t, qn in enumerate(qs):
                z = 1.0 / (torch.dot(qn, k_mean) + mixer.eps)
                out[t, sl] = naive_rotate(qn, *pos[t]) @ buffer * z
        else:
            qr = [naive_rotate(t, *pos[i]) for i, t in enumerate(qs)]
            kr = [naive_rotate(t, *pos[i]) for i, t in enumerate(ks)]
            for t in range(n):
                p = torch.softmax(torch.stack([d**-0.5 * torch.dot(qr[t], km) for km in kr]), 0)
                out[t, sl] = sum(p[m] * vs[m] for m in range(n))
    y = (out.reshape(h, w, c) + lepe) * gate
    return y @ mixer.proj.weight.T + mixer.proj.bias


@pytest.mark.parametrize("cls, linear", [(RankAugmentedLinearAttention, True), (RoPEGatedAttention, False)])
@pytest.mark.parametrize("hw, heads", [((4, 5), 2), ((3, 3), 1), ((1, 6), 2)])
def test_matches_naive_reference(cls, linear, hw, heads):
    torch.manual_seed(0)
    dim = 16
    mixer = cls(dim, heads).double().eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        x = torch.randn(2, *hw, dim, dtype=torch.float64)
        out = mixer(x)
        for b in range(2):
            torch.testing.assert_close(out[b], naive_mixer(mixer, x[b], linear), rtol=1e-9, atol=1e-9)


def test_rope_tables_official_spacing():
    """Frequencies 10000^-linspace(0, 1, d/4), each for two pairs; rows then columns along the head; sin signed
    -/+ within each pair."""
    sin, cos = rope_2d(2, 3, 8)
    assert sin.shape == cos.shape == (6, 8)
    token = 1 * 3 + 2  # row 1, column 2
    theta = torch.tensor([1.0, 1.0, 1e-4, 1e-4])
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0] * 2)
    torch.testing.assert_close(sin[token], sign * torch.cat([(1 * theta).sin(), (2 * theta).sin()]))
    torch.testing.assert_close(cos[token], torch.cat([(1 * theta).cos(), (2 * theta).cos()]))


def test_registry_builds_the_classes_and_checks_the_head_width():
    assert isinstance(create_mixer("rala", 64, 1), RankAugmentedLinearAttention)
    assert isinstance(create_mixer("rala_softmax", 64, 2), RoPEGatedAttention)
    with pytest.raises(ValueError, match="multiple of 4"):
        create_mixer("rala", 30, 5)
    with pytest.raises(ValueError, match=r"\(B, H, W, 64\)"):
        create_mixer("rala", 64, 1)(torch.randn(1, 64, 4, 4))


def test_tables_passed_in_give_the_same_result():
    torch.manual_seed(0)
    mixer = RankAugmentedLinearAttention(32, 2).eval()
    x = torch.randn(1, 5, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, rope=rope_2d(5, 6, 16)), mixer(x), rtol=0, atol=0)


def test_bf16_is_finite_at_a_large_map():
    torch.manual_seed(0)
    mixer = RankAugmentedLinearAttention(32, 1)
    x = torch.randn(1, 50, 84, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = mixer(x)
    assert torch.isfinite(out).all()
