"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024,
arXiv:2312.08874), the Agent-PVT and Agent-Swin forms.

A small grid of agent tokens A (the queries average-pooled to a_h x a_w) first gathers from the keys, then
broadcasts to the queries; both steps are softmax attentions with learned position biases, so the cost is linear in
N = H * W. Per head (d channels, s = d^-1/2):

    A = AvgPool_{a_h x a_w}(q)                       agents, (a, d) with a = a_h * a_w
    V_A = softmax(s A K^T + B_ak) V                  agents attend to the keys / values (N_k of them)
    y = softmax(s Q A^T + B_qa) V_A + DWConv_3x3(V)  queries attend to the agents; depthwise conv of v (upsampled
                                                     to H x W when the keys are spatially reduced)
    out = proj(y)

With ``sr_ratio`` r > 1 the keys and values come from a stride-r r x r conv + LayerNorm of the map (PVT's spatial
reduction); the map is zero-padded to a multiple of r first (the official code floors instead).

Position biases, as the official parameters: B_ak = an (h, a0, 7, 7) resized to the key grid + ah (h, a0, Hk0, 1) +
aw (h, a0, 1, Wk0); B_qa = na (h, a0, 7, 7) resized to the query grid + ha (h, H0, 1, a0) + wa (h, 1, W0, a0). H0 x W0
is the grid the model was trained at (the 224 input's stage map), Hk0 = H0 / r, a0 = p x p the trained agent grid.
One code path for every size: the 7 x 7 tables and the summed row / column tables are bilinearly resized to the
actual grids, and every table is resized along its agent axes to the agent grid a_h x a_w; at the trained size and
agent grid each resize is the identity (the official classification numerics), elsewhere this is what the official
segmentation copy does (there with ``downstream_agent_shape``).

The Agent-Swin form is the same computation without spatial reduction over the whole stage map (its "window" of 56
holds every released stage map) with one fused qkv projection; its checkpoints load by splitting that qkv into ``q``
and ``kv`` (backbones.models.agent_swin), and with r = 1 the two are applied as one stacked matmul here.

Shapes: input and output (B, H, W, C) channels-last, any H, W >= 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn

from ._checks import check_shape
from ._position_bias import adaptive_avg_pool_nhwc
from ._windows import is_compiling

__all__ = ["AgentAttention"]


def _resize(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of the last two dims of a 4-D table (align_corners=False, as the official code); the identity
    at equal size. The leading dims are (heads, channels): one image per head, many channels each (the CPU kernel is
    much slower on many 1-channel images)."""
    if not is_compiling() and t.shape[-2] == size[0] and t.shape[-1] == size[1]:  # traced: always resize (no guard)
        return t
    return F.interpolate(t, size=size, mode="bilinear")


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A linear layer over the tokens of a (B, H, W, C) map as one 2-D matmul (faster on CPU than a 4-D input)."""
    out = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(x.shape[0], x.shape[1], x.shape[2], weight.shape[0])


@register_notrace_module  # reason: size-equality shortcuts of the bias resizes are control flow on the map size
class AgentAttention(nn.Module):
    """Agent attention over a channels-last map (module docstring).

    Args:
        dim: channels C.
        num_heads: heads h.
        train_grid: (H0, W0), the query grid the position tables are sized to (the 224 input's stage map).
        sr_ratio: spatial reduction r of keys and values (PVT: 8 / 4 / 2 / 1).
        agent_num: trained agents a0 = p * p (49 in Agent-PVT).
        agent_shape: agent grid (a_h, a_w) used at run time (default p x p; the official dense models use others).
        qkv_bias: bias of the q and kv projections.
        attn_drop: dropout on both attention maps (training only).
        kernel_size: odd side of the depthwise conv on v.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        train_grid: int | tuple[int, int] = 56,
        sr_ratio: int = 1,
        agent_num: int = 49,
        agent_shape: tuple[int, int] | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        kernel_size: int = 3,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"AgentAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        pool = math.isqrt(agent_num)
        if pool * pool != agent_num:
            raise ValueError(f"AgentAttention: agent_num must be a square (a p x p agent grid), got {agent_num}")
        grid = (train_grid, train_grid) if isinstance(train_grid, int) else tuple(train_grid)
        if sr_ratio < 1 or min(grid) < sr_ratio:
            raise ValueError(f"AgentAttention: sr_ratio must be in 1..min(train_grid) = {min(grid)}, got {sr_ratio}")
        dd = dict(device=device, dtype=dtype)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.train_grid, self.sr_ratio, self.agent_num = grid, sr_ratio, agent_num
        self.pool_size = pool
        self.agent_shape = tuple(agent_shape) if agent_shape is not None else (pool, pool)
        self.attn_drop = nn.Dropout(attn_drop)
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio, **dd)
            self.norm = nn.LayerNorm(dim, **dd)
        self.dwc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)
        h0, w0 = grid
        hk0, wk0 = h0 // sr_ratio, w0 // sr_ratio
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7, **dd))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7, **dd))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, hk0, 1, **dd))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, wk0, **dd))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, h0, 1, agent_num, **dd))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, w0, agent_num, **dd))
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            nn.init.trunc_normal_(p, std=0.02)

    def _agent_key_bias(self, kv_size: tuple[int, int]) -> Tensor:
        """(h, a, N_k): agents -> keys."""
        heads, p = self.num_heads, self.pool_size
        rows_cols = (self.ah_bias + self.aw_bias)[0]  # (h, a0, Hk0, Wk0)
        bias = _resize(self.an_bias, kv_size) + _resize(rows_cols, kv_size)  # (h, a0, Hk, Wk)
        bias = bias.reshape(heads, p, p, -1).permute(0, 3, 1, 2)  # agent grid last: (h, N_k, p, p)
        return _resize(bias, self.agent_shape).flatten(2).transpose(1, 2)

    def _query_agent_bias(self, size: tuple[int, int]) -> Tensor:
        """(h, N, a): queries -> agents."""
        heads, p = self.num_heads, self.pool_size
        rows_cols = (self.ha_bias + self.wa_bias)[0].permute(0, 3, 1, 2)  # (h, a0, H0, W0)
        bias = _resize(self.na_bias, size) + _resize(rows_cols, size)  # (h, a0, H, W)
        bias = bias.reshape(heads, p, p, -1).permute(0, 3, 1, 2)  # (h, N, p, p)
        return _resize(bias, self.agent_shape).flatten(2)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(
            x, 4, self.dim, -1, f"AgentAttention: expected x of shape (B, H, W, {self.dim}) (channels-last)"
        )
        b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        heads, d, r = self.num_heads, self.head_dim, self.sr_ratio
        if not hasattr(self, "sr"):  # r = 1: q and kv of the same tokens, one matmul with the two weights stacked
            weight = torch.cat((self.q.weight, self.kv.weight))
            q_bias, kv_bias = self.q.bias, self.kv.bias
            bias: Tensor | None = None
            if q_bias is not None and kv_bias is not None:
                bias = torch.cat((q_bias, kv_bias))
            q, k, v = _linear(x, weight, bias).chunk(3, dim=-1)
        else:
            q = _linear(x, self.q.weight, self.q.bias)  # (B, H, W, C)
            pad_h, pad_w = (-h) % r, (-w) % r
            reduced = self.sr(F.pad(x, (0, 0, 0, pad_w, 0, pad_h)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            k, v = _linear(self.norm(reduced), self.kv.weight, self.kv.bias).chunk(2, dim=-1)  # (B, Hk, Wk, C)
        hk, wk = k.shape[1], k.shape[2]
        if torch.jit.is_scripting():  # TorchScript compiles only this branch
            agents = F.adaptive_avg_pool2d(q.permute(0, 3, 1, 2), self.agent_shape)  # (B, C, a_h, a_w)
        else:
            agents = adaptive_avg_pool_nhwc(q, self.agent_shape[0], self.agent_shape[1])  # (B, C, a_h, a_w)
        agents = agents.reshape(b, heads, d, -1).transpose(-2, -1)  # (B, h, a, d)
        q = q.reshape(b, h * w, heads, d).transpose(1, 2)
        k_h = k.reshape(b, hk * wk, heads, d).transpose(1, 2)
        v_h = v.reshape(b, hk * wk, heads, d).transpose(1, 2)

        agent_attn = torch.softmax((agents * self.scale) @ k_h.transpose(-2, -1) + self._agent_key_bias((hk, wk)), -1)
        agent_v = self.attn_drop(agent_attn) @ v_h  # (B, h, a, d)
        q_attn = torch.softmax((q * self.scale) @ agents.transpose(-2, -1) + self._query_agent_bias((h, w)), -1)
        out = (self.attn_drop(q_attn) @ agent_v).transpose(1, 2).reshape(b, h, w, c)

        v_map = v.permute(0, 3, 1, 2)  # NCHW view
        if r > 1:
            v_map = F.interpolate(v_map, size=(h, w), mode="bilinear")
        return _linear(out + self.dwc(v_map).permute(0, 2, 3, 1), self.proj.weight, self.proj.bias)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, train_grid={self.train_grid}, "
                f"agents={self.agent_shape}")
