"""FocalModulation against a slow reference written from the paper's equations (loops, no grouped convs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks import FocalModulation

# (focal_levels, focal_window, normalize_modulator, use_post_norm)
CASES = [
    (1, 3, False, False),
    (2, 3, False, False),
    (3, 3, True, False),
    (3, 5, False, True),
    (4, 3, True, True),
]


def _pointwise(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution as a per-pixel matrix product."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[None, :, None, None]


def _depthwise_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise cross-correlation with zero 'same' padding, by shifting and adding one kernel tap at a time."""
    k = kernel.shape[-1]
    H, W = x.shape[-2:]
    padded = F.pad(x, (k // 2,) * 4)
    out = torch.zeros_like(x)
    for dy in range(k):
        for dx in range(k):
            out = out + kernel[None, :, 0, dy, dx, None, None] * padded[:, :, dy : dy + H, dx : dx + W]
    return out


def _layer_norm_channels(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    var = (x - mean).square().mean(1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def naive_focal_modulation(x: torch.Tensor, mod: FocalModulation, normalize: bool, post_norm: bool) -> torch.Tensor:
    C, L = mod.dim, mod.focal_levels
    y = _pointwise(x, mod.f)
    q, ctx, gates = y[:, :C], y[:, C : 2 * C], y[:, 2 * C :]
    assert gates.shape[1] == L + 1
    contexts = []
    for level in range(L):
        ctx = F.gelu(_depthwise_same(ctx, mod.focal_layers[level][0].weight))
        contexts.append(ctx)
    contexts.append(F.gelu(ctx.mean((2, 3), keepdim=True)).expand_as(ctx))  # global level, from the last level
    aggregated = torch.zeros_like(q)
    for level, context in enumerate(contexts):
        aggregated = aggregated + context * gates[:, level : level + 1]
    if normalize:
        aggregated = aggregated / (L + 1)
    out = q * _pointwise(aggregated, mod.h)
    if post_norm:
        out = _layer_norm_channels(out, mod.norm)
    return _pointwise(out, mod.proj)


def _make(levels: int, window: int, normalize: bool, post_norm: bool, dim: int = 8) -> FocalModulation:
    torch.manual_seed(1)
    mod = FocalModulation(
        dim, focal_levels=levels, focal_window=window, normalize_modulator=normalize, use_post_norm=post_norm
    )
    with torch.no_grad():  # O(1) weights so that every gate, level and GELU matters
        for p in mod.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        if post_norm:
            mod.norm.weight.add_(1.0)
    return mod.eval()


@pytest.mark.parametrize("levels,window,normalize,post_norm", CASES)
def test_matches_naive_reference(levels, window, normalize, post_norm):
    mod = _make(levels, window, normalize, post_norm)
    assert mod.kernel_sizes == [window + 2 * i for i in range(levels)]
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        expected = naive_focal_modulation(x, mod, normalize, post_norm)
        torch.testing.assert_close(mod(x), expected, rtol=1e-5, atol=1e-5)
        # channels-last memory gives the same values
        torch.testing.assert_close(mod(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("levels,window,normalize,post_norm", [CASES[2], CASES[4]])
def test_gradients_match_naive_reference(levels, window, normalize, post_norm):
    """The in-place accumulation must not corrupt autograd."""
    mod = _make(levels, window, normalize, post_norm).train()
    x = torch.randn(2, 8, 7, 6, requires_grad=True)
    upstream = torch.randn(2, 8, 7, 6)
    grads = []
    for fn in (lambda: mod(x), lambda: naive_focal_modulation(x, mod, normalize, post_norm)):
        mod.zero_grad()
        x.grad = None
        (fn() * upstream).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in mod.parameters()])
    for a, b in zip(*grads):  # sums over many positions of O(1) terms: tolerance relative to the tensor's scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_normalize_modulator_is_division_of_context_by_levels_plus_one():
    plain, normalized = _make(3, 3, False, False), _make(3, 3, True, False)
    normalized.load_state_dict(plain.state_dict())
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        plain.h.weight.div_(4)  # h is linear in the context: scaling its weight by 1/(L+1) == normalizing
        torch.testing.assert_close(normalized(x), plain(x), rtol=1e-5, atol=1e-5)


def test_state_dict_keys_follow_timm():
    mod = FocalModulation(8, focal_levels=2, focal_window=3, use_post_norm=True)
    shapes = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
    assert shapes == {
        "f.weight": (2 * 8 + 3, 8, 1, 1),
        "f.bias": (19,),
        "focal_layers.0.0.weight": (8, 1, 3, 3),
        "focal_layers.1.0.weight": (8, 1, 5, 5),
        "h.weight": (8, 8, 1, 1),
        "h.bias": (8,),
        "norm.weight": (8,),
        "norm.bias": (8,),
        "proj.weight": (8, 8, 1, 1),
        "proj.bias": (8,),
    }
    assert "norm.weight" not in FocalModulation(8).state_dict()


def test_zero_padded_kernels_compute_the_same():
    small = _make(2, 3, False, False)
    big = FocalModulation(8, focal_levels=2, focal_window=9).eval()
    state = small.state_dict()
    for level, k in enumerate(big.kernel_sizes):
        w = state[f"focal_layers.{level}.0.weight"]
        pad = (k - w.shape[-1]) // 2
        state[f"focal_layers.{level}.0.weight"] = F.pad(w, (pad,) * 4)
    big.load_state_dict(state)
    x = torch.randn(2, 8, 10, 7)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-6)
