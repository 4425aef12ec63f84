"""Cascaded group attention, its window wrapper and the Conv-BN pairs against slow, explicit references."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.cascaded_group_attention import (
    CascadedGroupAttention,
    LocalWindowAttention,
    window_offset_index,
)
from backbones.blocks.conv_norm import ConvNorm, NormLinear


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics/affines and attention biases, so that no term of the computation is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bn.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bn.bias") or "attention_biases" in name:
                p.copy_(torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module.eval()


def _conv_bn(cn: ConvNorm, x: torch.Tensor) -> torch.Tensor:
    """Conv then eval-mode BatchNorm written out: gamma * (y - mean) / sqrt(var + eps) + beta."""
    c, bn = cn.conv, cn.bn
    y = F.conv2d(x, c.weight, None, c.stride, c.padding, c.dilation, c.groups)
    inv = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    return (y - bn.running_mean[:, None, None]) * (bn.weight * inv)[:, None, None] + bn.bias[:, None, None]


def _naive_bias(table: torch.Tensor, r: int) -> torch.Tensor:
    """(N, N) bias of one head from its (R*R,) table, pair by pair: index |dy| * R + |dx|."""
    n = r * r
    out = torch.empty(n, n, dtype=table.dtype)
    for p in range(n):
        for q in range(n):
            dy, dx = abs(p // r - q // r), abs(p % r - q % r)
            out[p, q] = table[dy * r + dx]
    return out


def _naive_cga(m: CascadedGroupAttention, x: torch.Tensor) -> torch.Tensor:
    """The cascade head by head, with explicit softmax and bias, one image at a time."""
    h, kd, d = m.num_heads, m.key_dim, m.val_dim
    B, C, H, W = x.shape
    r = m.window_size
    outs = []
    for b in range(B):
        xb = x[b : b + 1]
        head_outs = []
        prev = None
        for i in range(h):
            z = xb[:, i * d : (i + 1) * d]
            if prev is not None:
                z = z + prev
            qkv = _conv_bn(m.qkvs[i], z)
            q, k, v = qkv[:, :kd], qkv[:, kd : 2 * kd], qkv[:, 2 * kd :]
            q = _conv_bn(m.dws[i], q)
            q, k, v = q.reshape(kd, H * W), k.reshape(kd, H * W), v.reshape(d, H * W)
            logits = (q.T @ k) / math.sqrt(kd) + _naive_bias(m.attention_biases[i].detach(), r)
            e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            attn = e / e.sum(dim=1, keepdim=True)
            o = torch.zeros(d, H * W, dtype=x.dtype)
            for p in range(H * W):  # output token p = sum over keys of attn[p, q] * v[:, q]
                o[:, p] = (v * attn[p][None, :]).sum(dim=1)
            prev = o.reshape(1, d, H, W)
            head_outs.append(prev)
        y = F.relu(torch.cat(head_outs, dim=1))
        outs.append(_conv_bn(m.proj[1], y))
    return torch.cat(outs, dim=0)


def _naive_windows(m: LocalWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Zero-pad to multiples of R (bottom/right), attend each window on its own, crop."""
    r = m.window_size
    B, C, H, W = x.shape
    if (H, W) == (r, r):
        return _naive_cga(m.attn, x)
    Hp, Wp = math.ceil(H / r) * r, math.ceil(W / r) * r
    padded = torch.zeros(B, C, Hp, Wp, dtype=x.dtype)
    padded[:, :, :H, :W] = x
    out = torch.zeros_like(padded)
    for i in range(Hp // r):
        for j in range(Wp // r):
            win = padded[:, :, i * r : (i + 1) * r, j * r : (j + 1) * r]
            out[:, :, i * r : (i + 1) * r, j * r : (j + 1) * r] = _naive_cga(m.attn, win)
    return out[:, :, :H, :W]


@pytest.fixture(scope="module")
def cga():
    torch.manual_seed(0)
    return _randomize(CascadedGroupAttention(24, key_dim=8, num_heads=3, window_size=4, kernels=(5, 3, 1)))


def test_offset_index_matches_official_enumeration():
    # The official code numbers sign-less offsets in order of first appearance, scanning token pairs row-major.
    for r in (1, 4, 7):
        seen, idxs = {}, []
        points = list(itertools.product(range(r), range(r)))
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(seen.setdefault(off, len(seen)))
        assert torch.equal(window_offset_index(r), torch.tensor(idxs).view(r * r, r * r))


def test_cga_matches_naive_per_head_loop(cga):
    x = torch.randn(2, 24, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(cga(x), _naive_cga(cga, x), rtol=1e-4, atol=1e-5)


def test_cga_cascade_feeds_previous_head():
    # Head 1's own chunk is left unchanged: its qkv projection may only change through head 0's output.
    torch.manual_seed(1)
    m = _randomize(CascadedGroupAttention(16, key_dim=4, num_heads=2, window_size=3, kernels=(3, 3)))
    x = torch.randn(1, 16, 3, 3)
    heads = {}

    def grab(i):
        return lambda mod, inp, out: heads.__setitem__(i, out.detach().clone())

    hooks = [m.qkvs[i].register_forward_hook(grab(i)) for i in range(2)]
    with torch.no_grad():
        m(x)
        base = dict(heads)
        x2 = x.clone()
        x2[:, :8] += 1.0
        m(x2)
    for h in hooks:
        h.remove()
    assert not torch.allclose(heads[1], base[1])


@pytest.mark.parametrize("hw", [(4, 4), (13, 10), (3, 5), (8, 8)])
def test_window_attention_matches_naive_windows(hw):
    torch.manual_seed(2)
    m = _randomize(LocalWindowAttention(16, key_dim=4, num_heads=2, window_size=4, kernels=(3, 5)))
    x = torch.randn(2, 16, *hw)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _naive_windows(m, x), rtol=1e-4, atol=1e-5)


def test_cga_refuses_other_sizes_clearly(cga):
    with pytest.raises(ValueError, match=r"\(B, C, 4, 4\)"):
        cga(torch.randn(1, 24, 5, 4))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CascadedGroupAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="one kernel size per head"):
        CascadedGroupAttention(12, num_heads=3, kernels=(3, 3))


def test_biases_never_stale(cga):
    """Eval, forward, then load / edit / move: the next forward must use the current biases."""
    m = copy.deepcopy(cga).eval()
    x = torch.randn(1, 24, 4, 4)
    with torch.no_grad():
        m(x)
        other = _randomize(copy.deepcopy(cga), seed=5)
        m.load_state_dict(other.state_dict())
        torch.testing.assert_close(m(x), _naive_cga(other, x), rtol=1e-4, atol=1e-5)
        m.attention_biases.add_(0.5)  # in-place edit in eval mode (e.g. an EMA update)
        torch.testing.assert_close(m(x), _naive_cga(m, x), rtol=1e-4, atol=1e-5)
        m64 = m.to(torch.float64)
        y = m64(x.double())
        assert y.dtype == torch.float64
        torch.testing.assert_close(y, _naive_cga(m64, x.double()))
        assert m.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


def test_set_window_size_resizes_biases():
    m = LocalWindowAttention(8, key_dim=4, num_heads=2, window_size=4, kernels=(3, 3))
    with torch.no_grad():
        m.attn.attention_biases.fill_(0.25)
    m.set_window_size(7)
    assert m.attn.attention_biases.shape == (2, 49)
    assert m.attn.attention_bias_idxs.shape == (49, 49)
    # a constant table stays constant under interpolation
    torch.testing.assert_close(m.attn.attention_biases, torch.full((2, 49), 0.25))
    _randomize(m)
    x = torch.randn(1, 8, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _naive_windows(m, x), rtol=1e-4, atol=1e-5)


def test_gradients_reach_biases_and_all_heads():
    m = CascadedGroupAttention(16, key_dim=4, num_heads=4, window_size=3, kernels=(3, 3, 3, 3), proj_bn_init=1.0)
    m(torch.randn(2, 16, 3, 3)).square().sum().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead


@pytest.mark.parametrize(
    "kwargs",
    [dict(kernel_size=1), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=5, padding=2, groups=8),
     dict(kernel_size=3, padding=2, dilation=2)],
)
def test_conv_norm_fuse(kwargs):
    torch.manual_seed(3)
    m = _randomize(ConvNorm(8, 16, **kwargs))
    x = torch.randn(2, 8, 11, 9)
    fused = m.fuse()
    assert isinstance(fused, torch.nn.Conv2d) and fused.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(fused(x), _conv_bn(m, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_norm_linear_fuse(bias):
    torch.manual_seed(4)
    m = _randomize(NormLinear(12, 5, bias=bias))
    if bias:
        torch.nn.init.normal_(m.linear.bias)
    x = torch.randn(3, 12)
    bn = m.bn
    ref = ((x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias) @ m.linear.weight.T
    if bias:
        ref = ref + m.linear.bias
    with torch.no_grad():
        torch.testing.assert_close(m.fuse()(x), ref, rtol=1e-5, atol=1e-5)
