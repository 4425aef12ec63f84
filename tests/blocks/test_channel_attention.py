"""ChannelAttention against a slow reference written per group and per channel (explicit sums over tokens),
against timm's classes for the role order, and in fp16/bf16 autocast at detection-size token counts."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.davit import ChannelAttention as TimmChannelAttention
from timm.models.davit import ChannelAttentionV2 as TimmChannelAttentionV2

from backbones.blocks.channel_attention import ChannelAttention


def naive_channel_attention(x: torch.Tensor, attn: ChannelAttention) -> torch.Tensor:
    """x: (B, N, C). The qkv output is cut into chunks t0 | t1 | t2 of C channels each; within group g every
    channel i gets a softmax over the group's channels j of sum_n query[n, i] * key[n, j] * scale and outputs
    sum_j weight[i, j] * value[n, j]. v1: query t1, key t2, value t0, scale Cg^-0.5; v2: t0, t1, t2, N^-0.5."""
    b, n, c = x.shape
    cg = attn.group_dim
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    t0, t1, t2 = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    query, key, value = (t0, t1, t2) if attn.v2 else (t1, t2, t0)
    scale = 1 / math.sqrt(n) if attn.v2 else 1 / math.sqrt(cg)
    out = torch.zeros_like(x)
    for bi in range(b):
        for g in range(attn.num_groups):
            chans = list(range(g * cg, (g + 1) * cg))
            for i in chans:
                logits = torch.stack([(query[bi, :, i] * key[bi, :, j]).sum() * scale for j in chans])
                weights = torch.softmax(logits, dim=0)
                out[bi, :, i] = sum(weights[t] * value[bi, :, j] for t, j in enumerate(chans))
    return out @ attn.proj.weight.T + attn.proj.bias


def _randomized(dim: int, groups: int, v2: bool) -> ChannelAttention:
    torch.manual_seed(0)
    attn = ChannelAttention(dim, num_groups=groups, v2=v2).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("n, dim, groups", [(10, 8, 2), (37, 12, 3), (5, 6, 1)])
def test_channel_attention_matches_naive(v2, n, dim, groups):
    attn = _randomized(dim, groups, v2)
    x = torch.randn(2, n, dim)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_channel_attention(x, attn), rtol=1e-5, atol=1e-5)


def test_channel_attention_takes_a_map_as_tokens():
    attn = _randomized(8, 2, False)
    x = torch.randn(2, 3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn(x.reshape(2, 15, 8)).reshape(2, 3, 5, 8), rtol=0, atol=0)


@pytest.mark.parametrize("v2", [False, True])
def test_channel_attention_role_order_is_timms(v2):
    """Same weights, same output as timm's ChannelAttention (v1 quirk) / ChannelAttentionV2 (Florence-2)."""
    ours = _randomized(16, 4, v2)
    ref = (TimmChannelAttentionV2 if v2 else TimmChannelAttention)(16, num_heads=4, qkv_bias=True).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 50, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def _overflowing_pair(dim: int = 32, groups: int = 2):
    """Ours and timm's v1 channel attention with weights that make |logits| >> 65504 over 66,800 tokens."""
    ours = ChannelAttention(dim, num_groups=groups).eval()
    ref = TimmChannelAttention(dim, num_heads=groups, qkv_bias=True).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(torch.eye(dim).repeat(3, 1) * 3)  # t0 = t1 = t2 = 3 x
        ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_channel_attention_autocast_at_detection_size(dtype):
    """800 x 1333 input, stride 4: 200 x 334 = 66,800 tokens. The v1 logits here reach ~1e5 per entry: timm's
    formulation overflows fp16 (inf -> NaN), ours keeps the logits in fp32 and stays close to the fp32 result."""
    torch.manual_seed(0)
    ours, ref = _overflowing_pair()
    x = torch.randn(1, 200 * 334, 32)
    with torch.no_grad():
        expected = ours(x)
        with torch.autocast("cpu", dtype=dtype):
            out = ours(x)
            ref_out = ref(x)
    assert torch.isfinite(out).all()
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    if dtype == torch.float16:
        assert not torch.isfinite(ref_out).all(), "the test input no longer overflows the fp16 formulation"


def test_channel_attention_bad_input():
    attn = ChannelAttention(8, num_groups=2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, N, 8\)"):
        attn(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        ChannelAttention(10, num_groups=3)
