"""The ablation mixers against naive loops over tokens, window offsets and heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.ablation_mixers import DecoupledAttention, LinearAttention, SigmoidAttention, StaticMixer


def _heads_loop(tokens_out, proj: torch.nn.Linear) -> torch.Tensor:
    return torch.cat(tokens_out, -1) @ proj.weight.T + proj.bias


def naive_static(x: torch.Tensor, m: StaticMixer) -> torch.Tensor:
    b, h, w, c = x.shape
    heads, d, k = m.num_heads, c // m.num_heads, m.window_size
    r = k // 2
    v = x @ m.v.weight.T + m.v.bias
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            per_head = []
            for hd in range(heads):
                offsets = [(di, dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)
                           if 0 <= i + di < h and 0 <= j + dj < w]
                if m.mode == "learned":
                    logits = torch.stack([m.position_logits[hd, di + r, dj + r] for di, dj in offsets])
                    weights = torch.softmax(logits, 0)
                else:
                    weights = torch.full((len(offsets),), 1.0 / len(offsets), dtype=x.dtype)
                sl = slice(hd * d, (hd + 1) * d)
                per_head.append(sum(a * v[:, i + di, j + dj, sl] for a, (di, dj) in zip(weights, offsets)))
            out[:, i, j] = _heads_loop(per_head, m.proj)
    return out


def _qkv(x: torch.Tensor, m) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = x.shape[-1]
    t = x.reshape(x.shape[0], -1, c) @ m.qkv.weight.T + m.qkv.bias
    return t[..., :c], t[..., c : 2 * c], t[..., 2 * c :]


def naive_sigmoid(x: torch.Tensor, m: SigmoidAttention) -> torch.Tensor:
    b, h, w, c = x.shape
    n, d = h * w, c // m.num_heads
    q, k, v = _qkv(x, m)
    bias = -math.log(n) if m.bias is None else m.bias
    out = torch.zeros(b, n, c, dtype=x.dtype)
    for bi in range(b):
        for i in range(n):
            per_head = []
            for hd in range(m.num_heads):
                sl = slice(hd * d, (hd + 1) * d)
                acc = torch.zeros(d, dtype=x.dtype)
                for j in range(n):
                    acc = acc + torch.sigmoid(q[bi, i, sl] @ k[bi, j, sl] / math.sqrt(d) + bias) * v[bi, j, sl]
                per_head.append(acc)
            out[bi, i] = _heads_loop(per_head, m.proj)
    return out.view(b, h, w, c)


def naive_linear(x: torch.Tensor, m: LinearAttention) -> torch.Tensor:
    b, h, w, c = x.shape
    n, d = h * w, c // m.num_heads
    q, k, v = _qkv(x, m)
    out = torch.zeros(b, n, c, dtype=x.dtype)
    for bi in range(b):
        for i in range(n):
            per_head = []
            for hd in range(m.num_heads):
                sl = slice(hd * d, (hd + 1) * d)
                fq = F.elu(q[bi, i, sl]) + 1
                sims = [fq @ (F.elu(k[bi, j, sl]) + 1) for j in range(n)]  # phi(q) . phi(k): a positive kernel
                per_head.append(sum(s * v[bi, j, sl] for j, s in enumerate(sims)) / (sum(sims) + m.eps))
            out[bi, i] = _heads_loop(per_head, m.proj)
    return out.view(b, h, w, c)


def naive_decoupled(x: torch.Tensor, s: torch.Tensor, m: DecoupledAttention) -> torch.Tensor:
    b, h, w, c = x.shape
    n, d = h * w, c // m.num_heads
    mean, var = s.mean(-1, keepdim=True), s.var(-1, unbiased=False, keepdim=True)
    s_norm = (s - mean) / torch.sqrt(var + m.context_norm.eps) * m.context_norm.weight + m.context_norm.bias
    qk = s_norm.reshape(b, n, c) @ m.qk.weight.T + m.qk.bias
    q, k = qk[..., :c], qk[..., c:]
    v = x.reshape(b, n, c) @ m.v.weight.T + m.v.bias  # values from x, not from the stage input
    out = torch.zeros(b, n, c, dtype=x.dtype)
    for bi in range(b):
        for i in range(n):
            per_head = []
            for hd in range(m.num_heads):
                sl = slice(hd * d, (hd + 1) * d)
                logits = torch.stack([q[bi, i, sl] @ k[bi, j, sl] for j in range(n)]) / math.sqrt(d)
                per_head.append(torch.softmax(logits, 0) @ v[bi, :, sl])
            out[bi, i] = _heads_loop(per_head, m.proj)
    return out.view(b, h, w, c)


def _randomise(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("mode", ["learned", "pool"])
@pytest.mark.parametrize("hw, window, heads", [((5, 6), 3, 2), ((4, 3), 5, 1), ((1, 1), 3, 4)])
def test_static_mixer_matches_naive(mode, hw, window, heads):
    m = _randomise(StaticMixer(8, heads, window_size=window, mode=mode).double())
    x = torch.randn(2, *hw, 8, dtype=torch.float64, requires_grad=True)
    out, ref = m(x), naive_static(x, m)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x, *m.parameters()])
    grads_ref = torch.autograd.grad((ref * g).sum(), [x, *m.parameters()])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_static_mixer_weights_do_not_depend_on_the_input():
    """Zero value weights but a bias: every output is the same convex mix of the same vector, whatever x is."""
    m = StaticMixer(4, 2, window_size=3).double()
    with torch.no_grad():
        m.v.weight.zero_()
    a, b = (m(torch.randn(1, 5, 5, 4, dtype=torch.float64)) for _ in range(2))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("hw, heads, bias", [((3, 4), 2, None), ((2, 2), 1, 0.5), ((1, 3), 4, None)])
def test_sigmoid_attention_matches_naive(hw, heads, bias):
    m = _randomise(SigmoidAttention(8, heads, bias=bias).double())
    x = torch.randn(2, *hw, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_sigmoid(x, m))


@pytest.mark.parametrize("hw, heads", [((3, 4), 2), ((1, 1), 1), ((2, 5), 4)])
def test_linear_attention_matches_naive(hw, heads):
    m = _randomise(LinearAttention(8, heads).double())
    x = torch.randn(2, *hw, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), naive_linear(x, m))


def test_linear_attention_under_bf16_autocast_is_close_to_fp32():
    m = LinearAttention(16, 2)
    x = torch.randn(2, 8, 8, 16)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("hw, heads", [((3, 4), 2), ((2, 2), 4)])
def test_decoupled_attention_matches_naive(hw, heads):
    m = _randomise(DecoupledAttention(8, heads).double())
    x = torch.randn(2, *hw, 8, dtype=torch.float64)
    s = torch.randn(2, *hw, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x, stage_input=s), naive_decoupled(x, s, m))
    torch.testing.assert_close(m(x), naive_decoupled(x, x, m))  # no stage input: plain attention on x
    assert DecoupledAttention.uses_stage_input


def test_decoupled_weights_follow_the_stage_input_not_x():
    """With the values fixed, changing x changes nothing but the values; changing the stage input moves the weights."""
    m = DecoupledAttention(8, 2).double()
    with torch.no_grad():
        m.v.weight.zero_()
        m.v.bias.normal_()
    x, s = torch.randn(1, 3, 3, 8, dtype=torch.float64), torch.randn(1, 3, 3, 8, dtype=torch.float64)
    base = m(x, stage_input=s)
    torch.testing.assert_close(m(torch.randn_like(x), stage_input=s), base)  # v does not depend on x here
    # every weight row is convex, and v is one constant vector: outputs equal proj(v) whatever the weights
    torch.testing.assert_close(m(x, stage_input=torch.randn_like(s)), base)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        StaticMixer(8, 2, mode="conv")
    with pytest.raises(ValueError, match="window_size must be a positive odd int"):
        StaticMixer(8, 2, window_size=4)
    for cls in (StaticMixer, SigmoidAttention, LinearAttention, DecoupledAttention):
        with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by num_heads \(4\)"):
            cls(10, 4)
    m = DecoupledAttention(8, 2)
    with pytest.raises(ValueError, match=r"stage_input must have the shape of x \(1, 3, 3, 8\)"):
        m(torch.randn(1, 3, 3, 8), stage_input=torch.randn(1, 2, 3, 8))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 8\)"):
        SigmoidAttention(8, 2)(torch.randn(1, 8, 3))
