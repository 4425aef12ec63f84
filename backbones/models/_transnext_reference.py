"""The official TransNeXt formulation, re-written (clean room) as a speed and numerics reference.

This follows the computation order and the state-dict layout of DaiShiResearch/TransNeXt's native (no CUDA
extension) modules, with the per-forward size handling of its detection/segmentation backbones, so that
``tools/benchmark.py --compare`` can time the official formulation against ours and the tests can load an
official-layout state dict into both and compare outputs:

- tokens are (B, N, C) sequences; every ConvGLU and pooling step reshapes to NCHW and back;
- the 3x3 neighbourhood is materialised with ``F.unfold`` over the concatenated [normalised K | V] map
  (k^2 copies of K and V), local logits and aggregation are batched (1 x d) @ (d x k^2) products, padding
  positions are masked with a boolean mask;
- the two logit blocks are concatenated, one softmax, then split;
- the position bias is the MLP on the de-duplicated (torch.unique over all query/key pairs) coordinate table,
  gathered to (heads, Nq, Nk); in "interpolate" mode at the reference size, then resized by two
  ``F.interpolate`` calls (key grid, then query grid).

MoH-ViT (``moh_transnext_*``): the official routers ``wg`` / ``wg_0`` / ``wg_1`` on the flattened (B * N, C)
tokens, top-k as a summed one-hot, the gates applied by einsum to the (B, N, heads, d) head outputs (the official
gate computation order; :func:`moh_gates`).

Coordinate tables are built once per input size and cached (as the official classification model builds them at
construction for its one size). Keys: ``patch_embed{i}``, ``block{i}.{j}``, ``norm{i}``, ``head`` as the official.
Nothing here is used by the models themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OfficialStyleTransNeXt", "create_official_style", "ARCHS", "moh_gates"]

ARCHS = {
    "transnext_micro": dict(embed_dims=(48, 96, 192, 384), depths=(2, 2, 15, 2), num_heads=(2, 4, 8, 16)),
    "transnext_tiny": dict(embed_dims=(72, 144, 288, 576), depths=(2, 2, 15, 2), num_heads=(3, 6, 12, 24)),
    "transnext_small": dict(embed_dims=(72, 144, 288, 576), depths=(5, 5, 22, 5), num_heads=(3, 6, 12, 24)),
    "transnext_base": dict(embed_dims=(96, 192, 384, 768), depths=(5, 5, 23, 5), num_heads=(4, 8, 16, 32)),
}
_MOH = {  # official MoH-ViT/transnext.py: (shared_head, routed_head) per stage
    "moh_transnext_small_75": ("transnext_small", (3, 6, 3, 4), (0, 0, 6, 12)),
    "moh_transnext_small_80": ("transnext_small", (3, 6, 3, 8), (0, 0, 6, 12)),
    "moh_transnext_base_50": ("transnext_base", (2, 2, 2, 4), (2, 4, 6, 8)),
    "moh_transnext_base_75": ("transnext_base", (4, 8, 4, 5), (0, 0, 8, 16)),
}
ARCHS.update({k: dict(ARCHS[a], shared_heads=s, routed_heads=r) for k, (a, s, r) in _MOH.items()})


def _add_routers(attn: nn.Module, dim: int, heads: int, shared: int, routed: int) -> None:
    attn.shared, attn.routed = shared, routed
    if routed > 0:
        attn.wg = nn.Linear(dim, heads - shared, bias=False)
        if shared > 0:
            attn.wg_0 = nn.Linear(dim, 2, bias=False)
    if shared > 1:
        attn.wg_1 = nn.Linear(dim, shared, bias=False)


def moh_gates(attn: nn.Module, x: Tensor, out: Tensor) -> Tensor:
    """Official MoH weighting: ``x`` (B, N, C) attention input, ``out`` (B, heads, N, d) -> (B, N, heads * d)."""
    b, n, c = x.shape
    flat = x.reshape(b * n, c)
    out = out.transpose(1, 2)  # (B, N, heads, d)
    if attn.routed > 0:
        probs = F.softmax(attn.wg(flat), dim=1)
        idx = torch.topk(probs, k=attn.routed, dim=1)[1]
        chosen = F.one_hot(idx, num_classes=probs.shape[1]).sum(dim=1)
        routed = probs * chosen
        routed = routed / routed.sum(dim=1, keepdim=True).clamp(min=torch.finfo(routed.dtype).eps)
        routed = routed.reshape(b, n, -1) * attn.routed
        if attn.shared > 1:
            shared = F.softmax(attn.wg_1(flat), dim=1).reshape(b, n, -1) * attn.shared
        else:
            shared = torch.ones(b, n, attn.shared, dtype=x.dtype, device=x.device) * attn.shared
        if attn.shared == 0:
            gates = routed
        else:
            w = F.softmax(attn.wg_0(flat), dim=1).reshape(b, n, 2) * 2
            gates = torch.cat([torch.einsum("bn,bne->bne", w[:, :, 0], shared),
                               torch.einsum("bn,bne->bne", w[:, :, 1], routed)], dim=2)
    else:
        gates = F.softmax(attn.wg_1(flat), dim=1).reshape(b, n, -1) * attn.shared
    return torch.einsum("bne,bned->bned", gates, out).reshape(b, n, c)


@torch.no_grad()
def coord_table(query: tuple[int, int], key: tuple[int, int], pretrain: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(index over query-major pairs (Nq * Nk,), de-duplicated log-spaced table (U, 2)), the official way."""
    qh = torch.arange(query[0], dtype=torch.float32)
    qw = torch.arange(query[1], dtype=torch.float32)
    kh = F.adaptive_avg_pool1d(qh[None], key[0])[0]
    kw = F.adaptive_avg_pool1d(qw[None], key[1])[0]
    qh, qw = (t.reshape(-1) for t in torch.meshgrid(qh, qw, indexing="ij"))
    kh, kw = (t.reshape(-1) for t in torch.meshgrid(kh, kw, indexing="ij"))
    dh = (qh[:, None] - kh[None, :]) / (pretrain[0] - 1) * 8
    dw = (qw[:, None] - kw[None, :]) / (pretrain[1] - 1) * 8
    table, index = torch.unique(torch.stack([dh, dw], dim=-1).view(-1, 2), return_inverse=True, dim=0)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return index, table


@torch.no_grad()
def local_mask(size: tuple[int, int], window: int) -> tuple[Tensor, Tensor]:
    """(valid window positions per pixel (N, 1), padding mask (N, k^2)) from unfolding a map of ones."""
    ones = F.unfold(torch.ones(1, 1, *size), window, padding=window // 2)[0]  # (k^2, N)
    return ones.sum(0)[:, None], ones.t() == 0


class _DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w).contiguous())
        return x.flatten(2).transpose(1, 2)


class _ConvGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = int(2 * hidden / 3)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = _DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.gelu(self.dwconv(gate, h, w)) * value)


class _CpbMixin:
    def _bias(self, index: Tensor, table: Tensor, nq: int, nk: int) -> Tensor:
        values = self.cpb_fc2(F.relu(self.cpb_fc1(table))).transpose(0, 1)  # (heads, U)
        return values[:, index.view(-1)].view(-1, nq, nk)

    @staticmethod
    def _resize(bias: Tensor, ref_q: tuple, ref_k: tuple, q: tuple, k: tuple) -> Tensor:
        heads = bias.shape[0]
        nq_ref, nk = ref_q[0] * ref_q[1], k[0] * k[1]
        bias = F.interpolate(bias.reshape(heads, nq_ref, *ref_k), k, mode="bilinear")
        bias = bias.reshape(heads, nq_ref, nk).transpose(1, 2).reshape(heads, nk, *ref_q)
        return F.interpolate(bias, q, mode="bilinear").reshape(heads, nk, -1).transpose(1, 2)


class _AggregatedAttention(nn.Module, _CpbMixin):
    def __init__(self, dim: int, heads: int, window: int, sr_ratio: int, shared: int = 0, routed: int = 0):
        super().__init__()
        self.heads, self.head_dim, self.window, self.sr_ratio = heads, dim // heads, window, sr_ratio
        self.local_len = window**2
        self.temperature = nn.Parameter(torch.log(torch.expm1(torch.full((heads, 1, 1), 1 / 0.24))))
        self.q = nn.Linear(dim, dim)
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(heads, 1, self.head_dim), std=0.02))
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.cpb_fc1 = nn.Linear(2, 512)
        self.cpb_fc2 = nn.Linear(512, heads)
        self.relative_pos_bias_local = nn.Parameter(nn.init.trunc_normal_(torch.empty(heads, self.local_len), std=4e-4))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(heads, self.head_dim, self.local_len), std=0.02)
        )
        self.learnable_bias = nn.Parameter(torch.zeros(heads, 1, self.local_len))
        _add_routers(self, dim, heads, shared, routed)

    def forward(self, x: Tensor, h: int, w: int, geo: dict) -> Tensor:
        b, n, c = x.shape
        pool = geo["pool"]
        pool_len = pool[0] * pool[1]
        q_norm = F.normalize(self.q(x).reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3), dim=-1)
        q_scaled = (q_norm + self.query_embedding) * F.softplus(self.temperature) * geo["length_scale"]

        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k.reshape(b, n, self.heads, self.head_dim), dim=-1).reshape(b, n, c)
        kv = torch.cat([k, v], dim=-1).permute(0, 2, 1).reshape(b, 2 * c, h, w)
        windows = F.unfold(kv, self.window, padding=self.window // 2)  # (B, 2C * k^2, N)
        windows = windows.reshape(b, 2 * self.heads, self.head_dim, self.local_len, n).permute(0, 1, 4, 2, 3)
        k_local, v_local = windows.chunk(2, dim=1)  # (B, heads, N, d, k^2)
        attn_local = (q_scaled.unsqueeze(-2) @ k_local).squeeze(-2) + self.relative_pos_bias_local.unsqueeze(1)
        attn_local = attn_local.masked_fill(geo["padding_mask"], float("-inf"))

        pooled = x.permute(0, 2, 1).reshape(b, c, h, w).contiguous()
        pooled = F.adaptive_avg_pool2d(F.gelu(self.sr(pooled)), pool).reshape(b, c, pool_len).permute(0, 2, 1)
        kv_pool = self.kv(self.norm(pooled)).reshape(b, pool_len, 2 * self.heads, self.head_dim).permute(0, 2, 1, 3)
        k_pool, v_pool = kv_pool.chunk(2, dim=1)

        bias = self._bias(geo["index"], geo["table"], *geo["bias_shape"])
        if geo["resize"] is not None:
            bias = self._resize(bias, *geo["resize"])
        attn_pool = q_scaled @ F.normalize(k_pool, dim=-1).transpose(-2, -1) + bias

        attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
        attn_local, attn_pool = torch.split(attn, [self.local_len, pool_len], dim=-1)
        weights = (q_norm @ self.learnable_tokens) + self.learnable_bias + attn_local
        x_local = (weights.unsqueeze(-2) @ v_local.transpose(-2, -1)).squeeze(-2)
        if self.shared or self.routed:
            return self.proj(moh_gates(self, x, x_local + attn_pool @ v_pool))
        out = (x_local + attn_pool @ v_pool).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class _Attention(nn.Module, _CpbMixin):
    def __init__(self, dim: int, heads: int, shared: int = 0, routed: int = 0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.temperature = nn.Parameter(torch.log(torch.expm1(torch.full((heads, 1, 1), 1 / 0.24))))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(heads, 1, self.head_dim), std=0.02))
        self.proj = nn.Linear(dim, dim)
        self.cpb_fc1 = nn.Linear(2, 512)
        self.cpb_fc2 = nn.Linear(512, heads)
        _add_routers(self, dim, heads, shared, routed)

    def forward(self, x: Tensor, h: int, w: int, geo: dict) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3 * self.heads, self.head_dim).permute(0, 2, 1, 3).chunk(3, dim=1)
        bias = self._bias(geo["index"], geo["table"], *geo["bias_shape"])
        if geo["resize"] is not None:
            bias = self._resize(bias, *geo["resize"])
        q = (F.normalize(q, dim=-1) + self.query_embedding) * F.softplus(self.temperature) * geo["length_scale"]
        attn = (q @ F.normalize(k, dim=-1).transpose(-2, -1) + bias).softmax(dim=-1)
        if self.shared or self.routed:
            return self.proj(moh_gates(self, x, attn @ v))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, window: int | None, sr_ratio: int, mlp_ratio: float, moh=(0, 0)):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if sr_ratio == 1:
            self.attn = _Attention(dim, heads, *moh)
        else:
            self.attn = _AggregatedAttention(dim, heads, window, sr_ratio, *moh)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _ConvGLU(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int, geo: dict) -> Tensor:
        x = x + self.attn(self.norm1(x), h, w, geo)
        return x + self.mlp(self.norm2(x), h, w)


class _PatchEmbed(nn.Module):
    def __init__(self, in_chs: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class OfficialStyleTransNeXt(nn.Module):
    """Official-layout TransNeXt (classification head included), any input size, both position-bias modes.

    Args mirror :class:`backbones.models.transnext.TransNeXt` (``img_size``, ``pretrain_size``,
    ``pos_bias_mode``, ``fixed_pool_size``; ``sr_ratios`` and ``window_sizes`` per stage).
    """

    def __init__(
        self,
        embed_dims=(72, 144, 288, 576),
        depths=(2, 2, 15, 2),
        num_heads=(3, 6, 12, 24),
        mlp_ratios=(8, 8, 4, 4),
        window_sizes=(3, 3, 3, None),
        sr_ratios=(8, 4, 2, 1),
        img_size: int = 224,
        pretrain_size: int = 224,
        pos_bias_mode: str = "extrapolate",
        fixed_pool_size: int | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        shared_heads=None,
        routed_heads=None,
    ):
        super().__init__()
        self.num_stages = len(depths)
        shared_heads = shared_heads or (0,) * self.num_stages
        routed_heads = routed_heads or (0,) * self.num_stages
        self.sr_ratios, self.window_sizes = sr_ratios, window_sizes
        self.img_size, self.pretrain_size = img_size, pretrain_size
        self.pos_bias_mode, self.fixed_pool_size = pos_bias_mode, fixed_pool_size
        self._geometry: dict = {}
        for i in range(self.num_stages):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            setattr(
                self,
                f"patch_embed{i + 1}",
                _PatchEmbed(in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], kernel, stride),
            )
            blocks = [
                _Block(embed_dims[i], num_heads[i], window_sizes[i], sr_ratios[i], mlp_ratios[i],
                       (shared_heads[i], routed_heads[i]))
                for _ in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _pool(self, stage: int, h: int, w: int) -> tuple[int, int]:
        sr = self.sr_ratios[stage]
        if sr == 1:
            return h, w
        if self.fixed_pool_size is not None:
            return self.fixed_pool_size, self.fixed_pool_size
        return h // sr, w // sr

    def geometry(self, stage: int, h: int, w: int, device: torch.device) -> dict:
        key = (stage, h, w, device)
        if key not in self._geometry:
            with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
                self._geometry[key] = self._build_geometry(stage, h, w, device)
        return self._geometry[key]

    @torch.no_grad()
    def _build_geometry(self, stage: int, h: int, w: int, device: torch.device) -> dict:
        stride = 4 * 2**stage
        pretrain = (self.pretrain_size // stride,) * 2
        pool = self._pool(stage, h, w)
        if self.pos_bias_mode == "interpolate":
            ref = (self.img_size // stride,) * 2
            ref_pool = self._pool(stage, *ref)
            index, table = coord_table(ref, ref_pool, pretrain)
            resize = (ref, ref_pool, (h, w), pool)
            bias_shape = (ref[0] * ref[1], ref_pool[0] * ref_pool[1])
        else:
            index, table = coord_table((h, w), pool, pretrain)
            resize, bias_shape = None, (h * w, pool[0] * pool[1])
        if self.sr_ratios[stage] == 1:
            length_scale, padding_mask = torch.tensor(math.log(h * w)), None
        else:
            valid, padding_mask = local_mask((h, w), self.window_sizes[stage])
            length_scale = torch.log(valid + pool[0] * pool[1])
            padding_mask = padding_mask.to(device)
        return dict(
            index=index.to(device),
            table=table.to(device),
            length_scale=length_scale.to(device),
            padding_mask=padding_mask,
            pool=pool,
            resize=resize,
            bias_shape=bias_shape,
        )

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage outputs (B, C, H, W), each after its stage norm."""
        outs = []
        for i in range(self.num_stages):
            x, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            geo = self.geometry(i, h, w, x.device)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, h, w, geo)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[-1].mean(dim=(2, 3)))


def create_official_style(name: str, **kwargs) -> OfficialStyleTransNeXt:
    """The reference for a ``transnext_*`` / ``moh_transnext_*`` name; keyword arguments as our model's where they
    exist (``moh``: our per-stage dicts)."""
    arch = dict(ARCHS[name.split(".")[0]])
    for ours, theirs in (("pool_ratios", "sr_ratios"),):
        if ours in kwargs:
            kwargs[theirs] = kwargs.pop(ours)
    for unused in ("drop_path_rate", "drop_rate", "pretrained"):
        kwargs.pop(unused, None)
    moh = kwargs.pop("moh", None)
    if moh is not None:  # our per-stage dicts -> the official per-stage lists
        kwargs["shared_heads"] = tuple(m["shared_heads"] if m else 0 for m in moh)
        kwargs["routed_heads"] = tuple(m["routed_heads"] if m else 0 for m in moh)
    return OfficialStyleTransNeXt(**dict(arch, **kwargs))
