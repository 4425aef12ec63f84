"""ConvPosEnc against an explicit loop over kernel taps, with and without the GELU, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.conv_pos_enc import ConvPosEnc


def naive_cpe(x: torch.Tensor, cpe: ConvPosEnc, act: bool) -> torch.Tensor:
    """x + act(depthwise conv(x)) on a (B, H, W, C) map, one kernel tap at a time."""
    weight, bias = cpe.proj.weight, cpe.proj.bias  # (C, 1, k, k), (C,)
    k = weight.shape[-1]
    h, w = x.shape[1:3]
    padded = F.pad(x, (0, 0, k // 2, k // 2, k // 2, k // 2))
    conv = bias.expand_as(x).clone()
    for dy in range(k):
        for dx in range(k):
            conv = conv + weight[:, 0, dy, dx] * padded[:, dy : dy + h, dx : dx + w]
    return x + (F.gelu(conv) if act else conv)


@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_conv_pos_enc_matches_naive(act, kernel_size):
    torch.manual_seed(0)
    cpe = ConvPosEnc(6, kernel_size=kernel_size, act=act)
    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    out = cpe(x)
    ref_x = x.detach().clone().requires_grad_()
    ref = naive_cpe(ref_x, cpe, act)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    g_ours = torch.autograd.grad(out, [x, cpe.proj.weight, cpe.proj.bias], grad)
    g_ref = torch.autograd.grad(ref, [ref_x, cpe.proj.weight, cpe.proj.bias], grad)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_conv_pos_enc_leaves_its_weight_untouched_and_keeps_fp32_residual_under_autocast():
    cpe = ConvPosEnc(4)
    before = cpe.proj.weight.detach().clone()
    x = torch.randn(1, 3, 3, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = cpe(x)
    assert y.dtype == torch.float32  # the residual sum is not folded into the bf16 convolution
    torch.testing.assert_close(cpe.proj.weight, before, rtol=0, atol=0)
    torch.testing.assert_close(y, naive_cpe(x, cpe, False), rtol=2e-2, atol=2e-2)


def test_conv_pos_enc_bad_input():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 4\)"):
        ConvPosEnc(4)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        ConvPosEnc(4, kernel_size=2)
