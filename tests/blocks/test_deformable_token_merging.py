"""DeformableConv2d / DeformableTokenMerging against a naive reference written here: every output pixel, kernel
tap and channel sampled one by one with explicit bilinear interpolation (zero outside the map), then BatchNorm
(eval formula) and GELU by hand; odd sizes padded to even; fp32 island under autocast; gradients."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks import DeformableConv2d, DeformableTokenMerging


def bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """img (C, H, W) read at the real point (y, x); the four neighbours outside the map count as zero."""
    C, H, W = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = torch.zeros(C, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * img[:, yy, xx]
    return out


def naive_deform_conv(x: torch.Tensor, m: DeformableConv2d) -> torch.Tensor:
    B, C, H, W = x.shape
    kh, kw = m.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = m.stride, m.padding, m.dilation
    offset = torch.nn.functional.conv2d(x, m.conv_offset.weight, m.conv_offset.bias, m.stride, m.padding, m.dilation)
    Ho, Wo = offset.shape[-2:]
    out = torch.zeros(B, m.out_channels, Ho, Wo, dtype=x.dtype)
    for n in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                acc = m.bias.clone() if m.bias is not None else torch.zeros(m.out_channels)
                for ki in range(kh):
                    for kj in range(kw):
                        tap = ki * kw + kj  # offsets: (dy, dx) pairs, kernel taps row-major
                        dy, dx = offset[n, 2 * tap, oy, ox].item(), offset[n, 2 * tap + 1, oy, ox].item()
                        sample = bilinear(x[n], oy * sh - ph + ki * dh + dy, ox * sw - pw + kj * dw + dx)
                        acc = acc + m.weight[:, :, ki, kj] @ sample
                out[n, :, oy, ox] = acc
    return out


def _randomize(module: torch.nn.Module, offset_std: float = 0.6) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            std = offset_std if "conv_offset" in name else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * std)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module.eval()


@pytest.mark.parametrize(
    "kwargs,H,W",
    [
        (dict(kernel_size=2, stride=2), 6, 8),
        (dict(kernel_size=3, stride=1, padding=1), 5, 4),
        (dict(kernel_size=3, stride=2, padding=1, dilation=2), 7, 6),
    ],
)
def test_deform_conv_matches_naive_bilinear(kwargs, H, W):
    torch.manual_seed(0)
    m = _randomize(DeformableConv2d(4, 6, **kwargs), offset_std=0.8)  # offsets of a few pixels, some outside
    x = torch.randn(2, 4, H, W)
    with torch.no_grad():
        out, ref = m(x), naive_deform_conv(x, m)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_zero_offsets_at_init_is_the_strided_conv():
    m = DeformableConv2d(4, 8, 2, stride=2)
    assert not m.conv_offset.weight.any() and not m.conv_offset.bias.any()
    x = torch.randn(2, 4, 6, 10)
    with torch.no_grad():
        torch.testing.assert_close(m(x), torch.nn.functional.conv2d(x, m.weight, m.bias, stride=2))


def naive_token_merging(x: torch.Tensor, m: DeformableTokenMerging) -> torch.Tensor:
    """x (B, H, W, C) -> zero-pad bottom/right to even -> deformable 2x2/s2 conv -> BN (eval) -> GELU -> NHWC."""
    B, H, W, C = x.shape
    padded = torch.zeros(B, C, H + H % 2, W + W % 2)
    padded[:, :, :H, :W] = x.permute(0, 3, 1, 2)
    y = naive_deform_conv(padded, m.conv)
    bn = m.norm
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))
    return y.permute(0, 2, 3, 1)


@pytest.mark.parametrize("H,W", [(6, 8), (5, 7), (1, 3)])
def test_token_merging_matches_naive(H, W):
    torch.manual_seed(0)
    m = _randomize(DeformableTokenMerging(4, 8))
    x = torch.randn(2, H, W, 4)
    with torch.no_grad():
        out, ref = m(x), naive_token_merging(x, m)
    assert out.shape == (2, math.ceil(H / 2), math.ceil(W / 2), 8)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_fp32_island_under_autocast_and_bfloat16():
    torch.manual_seed(0)
    m = _randomize(DeformableTokenMerging(4, 8))
    x = torch.randn(1, 6, 6, 4)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = m(x)
        low = m.to(torch.bfloat16)(x.bfloat16())  # no bfloat16 deform_conv2d CPU kernel: computed in fp32
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(amp.float(), ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.1)


def test_gradients_reach_offsets_input_and_weights():
    torch.manual_seed(0)
    m = _randomize(DeformableConv2d(3, 4, 2, stride=2)).double()
    x = torch.randn(1, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    params = [m.weight, m.bias, m.conv_offset.weight, m.conv_offset.bias]

    def f(inp, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            m, dict(zip(["weight", "bias", "conv_offset.weight", "conv_offset.bias"], ps))
        ):
            return m(inp)

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in params]), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(B, H, W, 4\)"):
        DeformableTokenMerging(4)(torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        DeformableConv2d(4, 8, 2, stride=2)(torch.randn(1, 3, 6, 6))


def test_flop_counter_counts_the_deformable_conv():
    from torch.utils.flop_counter import FlopCounterMode

    m = DeformableConv2d(4, 8, 2, stride=2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.randn(2, 4, 6, 10))
    per_output = 4 * 2 * 2  # multiply-adds per output value: C_in * k * k
    # the deformable conv (8 output channels) and the offset conv (2 * 2 * 2 = 8 channels), each 2 FLOPs per MAC
    expected = 2 * (2 * 8 * 3 * 5 * per_output) + 2 * (2 * 8 * 3 * 5 * per_output)
    assert counter.get_total_flops() == expected
