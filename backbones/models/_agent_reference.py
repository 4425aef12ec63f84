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

__all__ = ["PVT_ARCHS", "SWIN_ARCHS", "OfficialStyleAgentPVT", "OfficialStyleAgentSwin", "create_official_style"]

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


# Agent-Swin: agent blocks at the start of each stage (official attn types AAAB / AABB / AAMB2), window 56.
SWIN_ARCHS: dict[str, dict[str, Any]] = {
    "agent_swin_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), agent_depths=(2, 2, 6, 0)),
    "agent_swin_small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), agent_depths=(2, 2, 0, 0)),
    "agent_swin_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), agent_depths=(2, 2, 2, 0)),
}


def _windows(x: Tensor, ws: int) -> Tensor:
    b, h, w, c = x.shape
    return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def _unwindows(x: Tensor, ws: int, h: int, w: int) -> Tensor:
    b = x.shape[0] // (h * w // ws // ws)
    return x.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def _swin_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    m = _windows(img, ws).view(-1, ws * ws)
    m = m.unsqueeze(1) - m.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class _SwinAgentAttention(_AgentBiases):
    def __init__(self, dim: int, heads: int, grid: tuple[int, int], agent_num: int, agent_shape):
        super().__init__()
        self.scale = (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self._init_biases(heads, agent_num, grid, agent_shape)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3)
        return self.proj(_agent_attention(q, k, v, hw, self.heads, self.scale, self, self.dwc))


class _SwinWindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int):
        super().__init__()
        self.heads, self.ws, self.scale = heads, ws, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1])
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class _SwinBlock(nn.Module):
    def __init__(self, dim, heads, res, agent: bool, shift: int, agent_num: int, agent_shape, window: int = 7):
        super().__init__()
        self.agent, self.dense = agent, agent_shape is not None
        self.ws, self.shift = window, 0 if agent else shift  # agent blocks cover the whole map: never shifted
        if not agent and not self.dense and min(res) <= window:  # classifier: a map within one window is not shifted
            self.ws, self.shift = min(res), 0
        self.norm1 = nn.LayerNorm(dim)
        if agent:
            self.attn = _SwinAgentAttention(dim, heads, res, agent_num, agent_shape)
        else:
            self.attn = _SwinWindowAttention(dim, heads, self.ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, 4 * dim)
        mask = _swin_mask(res[0], res[1], self.ws, self.shift) if self.shift and not self.dense else None
        self.register_buffer("attn_mask", mask)  # persistent in the official classifier (None: not in the state)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        h, w = hw
        y = self.norm1(x).view(b, h, w, c)
        if self.agent:
            y = self.attn(y.reshape(b, n, c), hw).view(b, h, w, c)
        else:
            ws, s = self.ws, self.shift
            y = F.pad(y, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))  # dense copy: pad, then shift
            hp, wp = y.shape[1], y.shape[2]
            mask = None
            if s:
                y = torch.roll(y, (-s, -s), (1, 2))
                mask = self.attn_mask if self.attn_mask is not None else _swin_mask(hp, wp, ws, s).to(y)
            y = _unwindows(self.attn(_windows(y, ws).view(-1, ws * ws, c), mask).view(-1, ws, ws, c), ws, hp, wp)
            if s:
                y = torch.roll(y, (s, s), (1, 2))
            y = y[:, :h, :w, :].contiguous()
        x = x + y.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction, self.norm = nn.Linear(4 * dim, 2 * dim, bias=False), nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        b, _, c = x.shape
        x = x.view(b, hw[0], hw[1], c)
        x = F.pad(x, (0, 0, 0, hw[1] % 2, 0, hw[0] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        out_hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.view(b, -1, 4 * c))), out_hw


class _SwinLayer(nn.Module):
    def __init__(self, dim, depth, heads, res, agent_depth, agent_num, agent_shape, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            _SwinBlock(dim, heads, res, j < agent_depth, 3 if j % 2 else 0, agent_num, agent_shape)
            for j in range(depth)
        )
        self.downsample = _PatchMerging(dim) if downsample else None


class _SwinPatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(3, dim, 4, stride=4), nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = F.pad(x, (0, (4 - x.shape[3] % 4) % 4, 0, (4 - x.shape[2] % 4) % 4))  # the dense copy's padding
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class OfficialStyleAgentSwin(nn.Module):
    """Official ``AgentSwinTransformer`` (window 56, agent_num 9-16-49-49); ``agent_shapes``: its dense copy."""

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), agent_depths=(2, 2, 6, 0),
                 agent_num=(9, 16, 49, 49), agent_shapes=None, img_size=224, num_classes=1000):  # fmt: skip
        super().__init__()
        self.patch_embed = _SwinPatchEmbed(embed_dim)
        self.layers = nn.ModuleList()
        for i, d in enumerate(depths):
            res = (img_size // 4 // 2**i,) * 2
            shape = None if agent_shapes is None else tuple(agent_shapes[i])
            self.layers.append(_SwinLayer(embed_dim * 2**i, d, num_heads[i], res, agent_depths[i], agent_num[i],
                                          shape, i < len(depths) - 1))  # fmt: skip
        self.dense = agent_shapes is not None
        if self.dense:  # the dense copy: a LayerNorm per output (norm0..3), no final norm, no head
            for i in range(len(depths)):
                self.add_module(f"norm{i}", nn.LayerNorm(embed_dim * 2**i))
        else:
            self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))
            self.head = nn.Linear(self.norm.normalized_shape[0], num_classes) if num_classes else nn.Identity()

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """Stage outputs, NCHW (the dense copy's: through its per-output norms)."""
        x, hw = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            for blk in layer.blocks:
                x = blk(x, hw)
            out = getattr(self, f"norm{i}")(x) if self.dense else x
            outs.append(out.view(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2))
            if layer.downsample is not None:
                x, hw = layer.downsample(x, hw)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage_outputs(x)[-1].flatten(2).transpose(1, 2)
        return self.head(self.norm(x).mean(1))


def create_official_style(name: str, **kwargs: Any) -> nn.Module:
    """The reference model for a registered name (kwargs override the released configuration)."""
    if name.startswith("agent_pvt_"):
        return OfficialStyleAgentPVT(**dict(PVT_ARCHS[name], **kwargs))
    if name.startswith("agent_swin_"):
        return OfficialStyleAgentSwin(**dict(SWIN_ARCHS[name], **kwargs))
    raise KeyError(f"no official-style Agent reference for {name!r}")
