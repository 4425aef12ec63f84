"""The speed reference of LITv2 for ``tools/benchmark.py --compare``: the same network with every HiLo attention
replaced by plain global multi-head self-attention of the same width and head count.

HiLo's claim is throughput: at n tokens its Lo-Fi heads attend to n / s^2 pooled keys and its Hi-Fi heads to
s^2 window keys, where global attention attends to all n. Everything else (ConvFFN stages, token merging, the
MLPs of the attention blocks, the stage-4 attention, which is global in LITv2 as well) is shared, so the ratio
of the two networks shows what HiLo saves at each input size. Nothing here is used by the models themselves.
"""

from __future__ import annotations

from typing import Any

import timm
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks.hilo_attention import HiLoAttention

__all__ = ["GlobalAttention", "global_attention_litv2"]


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all H*W tokens of a channels-last map (B, H, W, C): fused qkv, SDPA, proj."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def global_attention_litv2(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with each :class:`HiLoAttention` swapped for :class:`GlobalAttention`."""
    model = timm.create_model(name, **kwargs)
    for module in list(model.modules()):
        attn = getattr(module, "attn", None)
        if isinstance(attn, HiLoAttention):
            module.attn = GlobalAttention(attn.dim, attn.num_heads)
    return model
