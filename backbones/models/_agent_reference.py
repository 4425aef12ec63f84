"""The official Agent-PVT and Agent-Swin classifiers, re-written (clean room) from LeapLabTHU/Agent-Attention as
references: ``agent_transformer/models/agent_pvt.py`` / ``agent_swin.py`` and, with ``agent_shapes`` set, their
dense copies (``downstream/{detection/mmdet,segmentation/mmseg}/models/backbones/agent_{pvt,swin}.py``).

Same module trees and therefore the same state-dict keys and shapes as the official classes (Agent-PVT:
``patch_embed{i}``, ``pos_embed{i}``, ``block{i}.{j}``, ``head``; Agent-Swin: ``patch_embed``, ``layers.{i}.blocks
.{j}``, ``layers.{i}.downsample``, ``norm``, ``head``, with the ``relative_position_index`` and ``attn_mask``
buffers), and the official computation order: (B, N, C) token sequences, bias tables built in every forward and
repeated over the batch, agents by ``nn.AdaptiveAvgPool2d``, explicit softmax attentions, the classifier's
bias shapes (the row / column biases are used at their trained size, so the classifier runs at its trained size
only) or, when ``agent_shapes`` is given, the dense copies' resizing of every bias to the map and the agent grid.
The tests load their state dicts (the official layouts) into ours and compare outputs; ``tools/benchmark.py
--compare`` times them against ours.

Nothing here is used by the models themselves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PVT_ARCHS", "OfficialStyleAgentPVT", "create_official_style"]

PVT_ARCHS: dict[str, dict[str, Any]] = {
    "agent_pvt_tiny": dict(depths=(2, 2, 2, 2)),
    "agent_pvt_small": dict(depths=(3, 4, 6, 3)),
    "agent_pvt_medium": dict(depths=(3, 4, 18, 3)),
    "agent_pvt_large": dict(depths=(3, 8, 27, 3)),
}


def _interp(t: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(t, size=size, mode="bilinear")


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _AgentBiases(nn.Module):
    """Base of the agent attentions: the six official bias tables (keys ``attn.an_bias`` ...) and the two official
    ways of turning them into attention biases."""

    def _init_biases(self, heads: int, agent_num: int, grid: tuple[int, int], agent_shape: tuple[int, int] | None):
        self.heads, self.agent_num, self.grid, self.agent_shape = heads, agent_num, grid, agent_shape
        self.pool_size = int(agent_num**0.5)
        self.an_bias = nn.Parameter(torch.zeros(heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(1, heads, agent_num, grid[0], 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, heads, agent_num, 1, grid[1]))
        self.ha_bias = nn.Parameter(torch.zeros(1, heads, grid[0], 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, heads, 1, grid[1], agent_num))
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            nn.init.trunc_normal_(p, std=0.02)

    def classification(self, b: int) -> tuple[Tensor, Tensor]:
        h, a = self.heads, self.agent_num
        pb1 = _interp(self.an_bias, self.grid).reshape(1, h, a, -1).repeat(b, 1, 1, 1)
        pb2 = (self.ah_bias + self.aw_bias).reshape(1, h, a, -1).repeat(b, 1, 1, 1)
        ab1 = _interp(self.na_bias, self.grid).reshape(1, h, a, -1).permute(0, 1, 3, 2).repeat(b, 1, 1, 1)
        ab2 = (self.ha_bias + self.wa_bias).reshape(1, h, -1, a).repeat(b, 1, 1, 1)
        return pb1 + pb2, ab1 + ab2

    def dense(self, b: int, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        h, p, shape = self.heads, self.pool_size, self.agent_shape
        n, a = hw[0] * hw[1], shape[0] * shape[1]

        def to_agents(t: Tensor) -> Tensor:  # (h, a0, H, W) -> (h, N, a): resize along the agent axes
            t = t.reshape(h, p, p, n).permute(0, 3, 1, 2)
            return _interp(t, shape).reshape(h, n, a)

        pb1 = to_agents(_interp(self.an_bias, hw)).permute(0, 2, 1)
        pb2 = to_agents(_interp((self.ah_bias + self.aw_bias).squeeze(0), hw)).permute(0, 2, 1)
        ab1 = to_agents(_interp(self.na_bias, hw))
        ab2 = to_agents(_interp((self.ha_bias + self.wa_bias).squeeze(0).permute(0, 3, 1, 2), hw))
        return ((pb1 + pb2).reshape(1, h, a, n).repeat(b, 1, 1, 1),
                (ab1 + ab2).reshape(1, h, n, a).repeat(b, 1, 1, 1))  # fmt: skip


def _agent_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    hw: tuple[int, int],
    heads: int,
    scale: float,
    biases: _AgentBiases,
    dwc: nn.Conv2d,
) -> Tensor:
    """The official agent attention on (b, n, c) q, k, v (no spatial reduction, as every released model)."""
    b, n, c = q.shape
    d = c // heads
    shape = biases.agent_shape or (biases.pool_size, biases.pool_size)
    agents = F.adaptive_avg_pool2d(q.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2), shape)
    agents = agents.reshape(b, c, -1).permute(0, 2, 1)
    q, k, v = (t.reshape(b, n, heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
    agents = agents.reshape(b, -1, heads, d).permute(0, 2, 1, 3)
    pos_bias, agent_bias = biases.classification(b) if biases.agent_shape is None else biases.dense(b, hw)
    agent_v = torch.softmax((agents * scale) @ k.transpose(-2, -1) + pos_bias, dim=-1) @ v
    x = torch.softmax((q * scale) @ agents.transpose(-2, -1) + agent_bias, dim=-1) @ agent_v
    x = x.transpose(1, 2).reshape(b, n, c)
    v = v.transpose(1, 2).reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)
    return x + dwc(v).permute(0, 2, 3, 1).reshape(b, n, c)


class _PVTAgentAttention(_AgentBiases):
    def __init__(self, dim: int, heads: int, grid: tuple[int, int], agent_num: int, agent_shape):
        super().__init__()
        self.scale = (dim // heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self._init_biases(heads, agent_num, grid, agent_shape)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        kv = self.kv(x).reshape(b, -1, 2, c).permute(2, 0, 1, 3)
        y = _agent_attention(self.q(x), kv[0], kv[1], hw, self.heads, self.scale, self, self.dwc)
        return self.proj(y)


class _PVTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, grid, agent_num: int, agent_shape):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _PVTAgentAttention(dim, heads, grid, agent_num, agent_shape)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x))


class _PVTPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch: int, cin: int, cout: int):
        super().__init__()
        self.patch, self.grid = patch, (img_size // patch, img_size // patch)
        self.proj, self.norm = nn.Conv2d(cin, cout, patch, stride=patch), nn.LayerNorm(cout)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        hw = (x.shape[2] // self.patch, x.shape[3] // self.patch)  # the official conv floors
        return self.norm(self.proj(x).flatten(2).transpose(1, 2)), hw


class OfficialStyleAgentPVT(nn.Module):
    """Official ``PyramidVisionTransformer`` of agent_pvt.py (attn_type 'AAAA', agent sr ratios '1111')."""

    def __init__(self, depths=(2, 2, 2, 2), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8),
                 mlp_ratios=(8, 8, 4, 4), agent_num=(9, 16, 49, 49), agent_shapes=None, img_size=224,
                 num_classes=1000):  # fmt: skip
        super().__init__()
        self.num_stages = len(depths)
        for i in range(self.num_stages):
            embed = _PVTPatchEmbed(img_size if i == 0 else img_size // (4 * 2 ** (i - 1)), 4 if i == 0 else 2,
                                   3 if i == 0 else embed_dims[i - 1], embed_dims[i])  # fmt: skip
            shape = None if agent_shapes is None else tuple(agent_shapes[i])
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, embed.grid[0] * embed.grid[1],
                                                                        embed_dims[i])))  # fmt: skip
            setattr(self, f"block{i + 1}", nn.ModuleList(
                _PVTBlock(embed_dims[i], num_heads[i], mlp_ratios[i], embed.grid, agent_num[i], shape)
                for _ in range(depths[i])))  # fmt: skip
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes else nn.Identity()

    def _pos_embed(self, i: int, hw: tuple[int, int]) -> Tensor:
        pos, grid = getattr(self, f"pos_embed{i + 1}"), getattr(self, f"patch_embed{i + 1}").grid
        if hw[0] * hw[1] == self.patch_embed1.grid[0] * self.patch_embed1.grid[1]:  # official test: stage 1's count
            return pos
        pos = _interp(pos.reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2), hw)
        return pos.reshape(1, -1, hw[0] * hw[1]).permute(0, 2, 1)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(self.num_stages):
            x, hw = getattr(self, f"patch_embed{i + 1}")(x)
            x = x + self._pos_embed(i, hw)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, hw)
            x = x.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage_outputs(x)[-1].flatten(2).mean(-1))


def create_official_style(name: str, **kwargs: Any) -> nn.Module:
    """The reference model for a registered name (kwargs override the released configuration)."""
    if name.startswith("agent_pvt_"):
        return OfficialStyleAgentPVT(**dict(PVT_ARCHS[name], **kwargs))
    raise KeyError(f"no official-style Agent reference for {name!r}")
