"""The official RAVLT classifier, re-written (clean room) from qhfan/RALA ``classfication/RALA.py`` as a reference.

Same module tree and therefore the same state-dict keys and shapes as the official class (``patch_embed.proj.*``,
``layers.i.RoPE.angle``, ``layers.i.blocks.j.{pos,norm1.norm,attn.qkvo,attn.lepe,attn.proj,norm2.norm,ffn.*,
gamma_1,gamma_2}``, ``layers.i.downsample.{reduction,norm}``, ``proj``, ``norm``, ``head``), and the official
computation order: an NCHW trunk with 1x1 convs, LayerNorm through two permutes, RoPE tables once per stage, the
linear attention's k * a * N and the two N^-1/2 factors of its buffer, an explicit softmax(q k^T) v in stages 3-4,
downsampling at the end of a stage, the head conv after pooling. The tests load its state dict (the official
layout) into ours and compare outputs; ``tools/benchmark.py --compare`` times it against ours.

Nothing here is used by the models themselves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ARCHS", "OfficialStyleRAVLT", "create_official_style"]

# The four released configurations (official RAVLT_T/S/B/L entrypoints): flags 'l' (linear) in stages 1-2, 'v'
# (softmax) in 3-4; FFN ratio 3.5; 1024-channel head conv; layer scale in every stage.
ARCHS: dict[str, dict[str, Any]] = {
    "ravlt_t": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                    layer_init_values=(1.0, 1.0, 1.0, 1.0)),
    "ravlt_s": dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
                    layer_init_values=(1.0, 1.0, 1.0, 1.0)),
    "ravlt_b": dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
                    layer_init_values=(1.0, 1.0, 1e-6, 1e-6)),
    "ravlt_l": dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
                    layer_init_values=(1e-6, 1e-6, 1e-6, 1e-6)),
}  # fmt: skip


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of an NCHW map via permutes (key ``norm.*``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rotate(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)
    return x * cos + turned * sin


class _RoPE(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        freqs = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4))
        self.register_buffer("angle", torch.stack((freqs, freqs), dim=-1).reshape(-1))  # (d / 2,)

    def forward(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        ys = torch.arange(h).to(self.angle)[:, None] * self.angle  # (h, d / 2)
        xs = torch.arange(w).to(self.angle)[:, None] * self.angle  # (w, d / 2)
        grid = torch.cat((ys[:, None].repeat(1, w, 1), xs[None].repeat(h, 1, 1)), dim=-1).flatten(0, 1)
        return grid.sin(), grid.cos()


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, linear: bool):
        super().__init__()
        self.dim, self.num_heads, self.linear = dim, num_heads, linear
        self.scale = (dim // num_heads) ** -0.5
        self.qkvo = nn.Conv2d(dim, 4 * dim, 1)
        self.lepe = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        qkvo = self.qkvo(x)
        gate = qkvo[:, 3 * c :]
        lepe = self.lepe(qkvo[:, 2 * c : 3 * c])
        # (b, 3 c, h, w) -> 3 x (b, heads, n, d), channels ordered (q|k|v, head, d)
        q, k, v = qkvo[:, : 3 * c].reshape(b, 3, self.num_heads, c // self.num_heads, n).permute(1, 0, 2, 4, 3)
        if self.linear:
            q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
            eff = torch.softmax(self.scale * q.mean(dim=-2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
            k = k * eff.transpose(-1, -2) * n
            z = 1.0 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
            kv = (_rotate(k, sin, cos).transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
            out = _rotate(q, sin, cos) @ kv * z
        else:
            q, k = _rotate(q, sin, cos), _rotate(k, sin, cos)
            out = torch.softmax(self.scale * q @ k.transpose(-1, -2), dim=-1) @ v
        out = out.permute(0, 1, 3, 2).reshape(b, c, h, w)
        return self.proj((out + lepe) * gate)


class _FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.fc1(x))
        return self.fc2(x + self.dwconv(x))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, linear: bool, ls_init: float):
        super().__init__()
        self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), ls_init))
        self.gamma_2 = nn.Parameter(torch.full((1, dim, 1, 1), ls_init))
        self.norm1 = _ChannelNorm(dim)
        self.attn = _Attention(dim, num_heads, linear)
        self.norm2 = _ChannelNorm(dim)
        self.ffn = _FFN(dim, int(3.5 * dim))
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        x = x + self.pos(x)
        x = x + self.gamma_1 * self.attn(self.norm1(x), sin, cos)
        return x + self.gamma_2 * self.ffn(self.norm2(x))


class _Merge(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(x))


class _Layer(nn.Module):
    def __init__(self, dim: int, out_dim: int | None, depth: int, num_heads: int, linear: bool, ls_init: float):
        super().__init__()
        self.RoPE = _RoPE(dim // num_heads)
        self.blocks = nn.ModuleList(_Block(dim, num_heads, linear, ls_init) for _ in range(depth))
        self.downsample = _Merge(dim, out_dim) if out_dim else None

    def forward(self, x: Tensor) -> Tensor:
        sin, cos = self.RoPE(*x.shape[-2:])
        for block in self.blocks:
            x = block(x, sin, cos)
        return x if self.downsample is None else self.downsample(x)


class OfficialStyleRAVLT(nn.Module):
    """The official classifier's structure and computation (module docstring); input (B, 3, H, W)."""

    def __init__(self, embed_dims, depths, num_heads, layer_init_values, num_classes: int = 1000,
                 in_chans: int = 3, projection: int = 1024):  # fmt: skip
        super().__init__()
        c0 = embed_dims[0]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Sequential(
            nn.Conv2d(in_chans, c0 // 2, 3, 2, 1), nn.BatchNorm2d(c0 // 2), nn.GELU(),
            nn.Conv2d(c0 // 2, c0 // 2, 3, 1, 1), nn.BatchNorm2d(c0 // 2), nn.GELU(),
            nn.Conv2d(c0 // 2, c0 // 2, 3, 1, 1), nn.BatchNorm2d(c0 // 2), nn.GELU(),
            nn.Conv2d(c0 // 2, c0, 3, 2, 1), nn.BatchNorm2d(c0),
        )  # fmt: skip
        last = len(depths) - 1
        self.layers = nn.ModuleList(
            _Layer(embed_dims[i], embed_dims[i + 1] if i < last else None, depths[i], num_heads[i], i < 2,
                   layer_init_values[i])
            for i in range(len(depths))
        )  # fmt: skip
        self.proj = nn.Conv2d(embed_dims[-1], projection, 1)
        self.norm = nn.BatchNorm2d(projection)
        self.head = nn.Conv2d(projection, num_classes, 1) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed.proj(x)
        for layer in self.layers:
            x = layer(x)
        x = F.silu(self.norm(self.proj(x)))
        return self.head(x.mean((2, 3), keepdim=True)).flatten(1)


def create_official_style(model_name: str, num_classes: int = 1000, **kwargs: Any) -> OfficialStyleRAVLT:
    """The official-formulation reference of ``model_name`` (``ravlt_t/s/b/l``); ``kwargs`` override the arch."""
    base = model_name.split(".")[0]
    if base not in ARCHS:
        raise KeyError(f"no official RAVLT configuration for {model_name!r}; known: {sorted(ARCHS)}")
    kwargs.pop("drop_path_rate", None)  # inference reference: no stochastic depth
    return OfficialStyleRAVLT(**dict(ARCHS[base], **kwargs), num_classes=num_classes)
