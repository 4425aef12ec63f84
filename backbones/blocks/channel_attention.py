"""Channel group attention (DaViT, ECCV 2022, arXiv:2204.03645; "v2" form from Florence-2, arXiv:2311.06242).

The C channels are split into G groups of Cg = C / G. Inside each group, every channel attends over the other
channels of the group, with the N tokens as the feature dimension, so the attention map is Cg x Cg and the
cost is linear in N. With ``t0, t1, t2 = split(x W_qkv + b_qkv)``, each (N, Cg) per group:

    v1 (DaViT):     A = softmax(t1^T t2 / sqrt(Cg))      out = (A t0^T)^T     roles: t1 query, t2 key, t0 value
    v2 (Florence-2): A = softmax(t0^T t1 / sqrt(N))       out = (A t2^T)^T     roles: t0 query, t1 key, t2 value
    y = proj(concat_groups(out))

The v1 role order is the official code's (the chunks it names q, k, v are used as value, query, key); it is
kept so that official and timm weights give the same numbers. Read with channels as the sequence, this is
scaled dot-product attention with query t1^T, key t2^T, value t0^T (each (Cg, N)).

Precision: v1 logits are sums over all N tokens scaled only by 1/sqrt(Cg), so they grow with the image area
(N = 66,800 at stride 4 of an 800 x 1333 detection input) and overflow fp16. The logits and softmax are
therefore computed in fp32 whatever the input dtype or autocast state; only the final product with the value
runs in the input's precision (the softmax weights are in [0, 1], so it cannot overflow).

Shapes: input and output (B, N, C) or (B, H, W, C) (all middle dims are tokens). State-dict keys ``qkv`` and
``proj`` (as timm's DaViT ``ChannelAttention`` / ``ChannelAttentionV2``).
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_function
from torch import Tensor, nn

from ._checks import check_shape
from ._precision import autocast_off

__all__ = ["ChannelAttention"]


@register_notrace_function  # reason: the autocast state of a Proxy's device is not traceable
def attention_weights_fp32(query: Tensor, key: Tensor, scale: float) -> Tensor:
    """softmax(scale * query key^T) in fp32 with autocast off: the logits are sums over all N tokens."""
    if torch.jit.is_scripting():  # TorchScript does not autocast
        return ((query.float() @ key.float().transpose(-2, -1)) * scale).softmax(dim=-1)
    else:
        with autocast_off(query.device.type):
            logits = query.float() @ key.float().transpose(-2, -1)  # (B, G, Cg, Cg), a sum over N tokens
            return (logits * scale).softmax(dim=-1)


class ChannelAttention(nn.Module):
    """Attention among the channels of each group, over all tokens (see the module docstring for the math).

    Args:
        dim: channels C.
        num_groups: channel groups G (C must be divisible by it); DaViT uses as many as spatial heads.
        qkv_bias: bias in the qkv projection.
        v2: Florence-2 form: standard q, k, v roles and scale N^-0.5 (N tokens at run time) instead of Cg^-0.5.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_groups: int = 8,
        qkv_bias: bool = True,
        v2: bool = False,
        proj_drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_groups:
            raise ValueError(f"dim ({dim}) must be divisible by num_groups ({num_groups})")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.num_groups = num_groups
        self.group_dim = dim // num_groups
        self.v2 = v2
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(
            x, 3, self.dim, -1, f"ChannelAttention: expected x of shape (B, N, {self.dim}) or (B, H, W, {self.dim})",
            min_ndim=True,
        )
        shape = x.shape
        b, c = shape[0], shape[-1]
        x = x.reshape(b, -1, c)
        n = x.shape[1]
        # (B, N, 3, G, Cg) -> 3 x (B, G, Cg, N): channels of a group are the sequence, tokens the features
        t0, t1, t2 = self.qkv(x).view(b, n, 3, self.num_groups, self.group_dim).permute(2, 0, 3, 4, 1).unbind(0)
        if self.v2:
            query, key, value, scale = t0, t1, t2, n**-0.5
        else:
            # official role order: chunk 1 is the query, chunk 2 the key, chunk 0 the value
            query, key, value, scale = t1, t2, t0, self.group_dim**-0.5
        attn = attention_weights_fp32(query, key, scale)  # (B, G, Cg, Cg)
        out = attn.to(value.dtype) @ value  # (B, G, Cg, N)
        out = out.permute(0, 3, 1, 2).reshape(shape)
        return self.proj_drop(self.proj(out))
