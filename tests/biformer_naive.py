"""Slow, obviously-correct BiFormer references for the tests, written from the paper and the official code's facts.

Everything loops: over images, regions, query tokens and heads; the attended set of every query region is built
as an explicit list of key tokens. Nothing here imports the code under test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def depthwise_same(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise cross-correlation of an NCHW map with zero 'same' padding, one kernel tap at a time."""
    k = weight.shape[-1]
    h, w = x.shape[-2:]
    padded = F.pad(x, (k // 2,) * 4)
    out = torch.zeros_like(x)
    for dy in range(k):
        for dx in range(k):
            out = out + weight[None, :, 0, dy, dx, None, None] * padded[:, :, dy : dy + h, dx : dx + w]
    return out if bias is None else out + bias[None, :, None, None]


def _pool_windows(rh: int, rw: int, mode: str, kv_per_region: int, ratio: int) -> list[list[tuple[int, int]]]:
    """Token positions (row, col inside a region) of each pooled k/v token, pooled tokens row-major."""
    if mode == "identity" or (mode in ("avgpool", "maxpool") and ratio <= 1):
        return [[(a, c)] for a in range(rh) for c in range(rw)]
    if mode.startswith("ada_"):
        p = kv_per_region

        def bins(n):  # PyTorch's adaptive pooling bins: [floor(i n / p), ceil((i + 1) n / p))
            return [range(math.floor(i * n / p), math.ceil((i + 1) * n / p)) for i in range(p)]

        row_bins, col_bins = bins(rh), bins(rw)
    else:  # kernel = stride = ratio, floor mode
        row_bins = [range(i * ratio, i * ratio + ratio) for i in range(rh // ratio)]
        col_bins = [range(j * ratio, j * ratio + ratio) for j in range(rw // ratio)]
    return [[(a, c) for a in rb for c in cb] for rb in row_bins for cb in col_bins]


def naive_bra(
    x: Tensor,
    qkv_weight: Tensor,
    qkv_bias: Tensor | None,
    lepe_weight: Tensor | None,
    lepe_bias: Tensor | None,
    proj_weight: Tensor | None,
    proj_bias: Tensor | None,
    num_heads: int,
    num_regions: int,
    topk: int,
    qk_dim: int,
    mask_padding: bool,
    kv_mode: str = "identity",
    kv_per_region: int = 4,
    kv_ratio: int = 4,
    routing_weight: bool = False,
    routing_proj: tuple[Tensor, Tensor] | None = None,
    scale: float | None = None,
) -> Tensor:
    """Bi-level routing attention of x (B, H, W, C), one query region and one query token at a time.

    mask_padding=False: the map is zero-padded bottom/right to multiples of S before the projection, so padded
    tokens are ordinary members of their regions (their q/k/v are the bias). mask_padding=True: padded positions
    are not tokens at all; a region without real tokens is routed last. Ties in the routing scores go to the
    lower region index.
    """
    b, h, w, c = x.shape
    s = num_regions
    rh, rw = math.ceil(h / s), math.ceil(w / s)
    hp, wp = rh * s, rw * s
    scale = scale if scale is not None else qk_dim**-0.5
    hd_qk, hd_v = qk_dim // num_heads, c // num_heads

    xp = x.new_zeros(b, hp, wp, c)
    xp[:, :h, :w] = x
    qkv = xp @ qkv_weight.T
    if qkv_bias is not None:
        qkv = qkv + qkv_bias
    q, k, v = qkv[..., :qk_dim], qkv[..., qk_dim : 2 * qk_dim], qkv[..., 2 * qk_dim :]

    def is_token(y, xx):
        return (y < h and xx < w) or not mask_padding

    # local context enhancement: depthwise conv over the map of v
    if lepe_weight is not None:
        v_map = v[:, :h, :w] if mask_padding else v
        lepe = depthwise_same(v_map.permute(0, 3, 1, 2), lepe_weight, lepe_bias).permute(0, 2, 3, 1)[:, :h, :w]
    else:
        lepe = x.new_zeros(b, h, w, c)

    windows = _pool_windows(rh, rw, kv_mode, kv_per_region, kv_ratio)
    out = x.new_zeros(b, h, w, c)
    for n in range(b):
        q_r, k_r, empty = [], [], []
        for r in range(s * s):
            ri, rj = divmod(r, s)
            toks = [(ri * rh + a, rj * rw + cc) for a in range(rh) for cc in range(rw)]
            toks = [t for t in toks if is_token(*t)]
            empty.append(not toks)
            if toks:
                q_r.append(torch.stack([q[n, y, xx] for y, xx in toks]).mean(0))
                k_r.append(torch.stack([k[n, y, xx] for y, xx in toks]).mean(0))
            else:
                q_r.append(q.new_zeros(qk_dim))
                k_r.append(q.new_zeros(qk_dim))
        if routing_proj is not None:
            q_r = [routing_proj[0] @ t + routing_proj[1] for t in q_r]
            k_r = [routing_proj[0] @ t + routing_proj[1] for t in k_r]
        for i in range(s * s):
            score_t = [
                q_r[i].new_tensor(float("-inf")) if empty[j] else torch.dot(q_r[i] * scale, k_r[j])
                for j in range(s * s)
            ]
            scores = [float(t.detach()) for t in score_t]
            routed = sorted(range(s * s), key=lambda j: (empty[j], -scores[j], j))[:topk]
            if routing_weight:  # differentiable, for the soft-routing variant
                weights = torch.softmax(torch.stack([score_t[j] for j in routed]), 0)
            # the attended set: the (pooled) k/v tokens of the routed regions, as an explicit list
            keys, values = [], []
            for slot, j in enumerate(routed):
                rj_row, rj_col = divmod(j, s)
                for win in windows:
                    pos = [(rj_row * rh + a, rj_col * rw + cc) for a, cc in win]
                    pos = [p for p in pos if is_token(*p)]
                    if not pos:
                        continue
                    ks = torch.stack([k[n, y, xx] for y, xx in pos])
                    vs = torch.stack([v[n, y, xx] for y, xx in pos])
                    if kv_mode.endswith("maxpool"):
                        kt, vt = ks.max(0).values, vs.max(0).values
                    else:
                        kt, vt = ks.mean(0), vs.mean(0)
                    if routing_weight:
                        kt, vt = kt * weights[slot], vt * weights[slot]
                    keys.append(kt)
                    values.append(vt)
            keys, values = torch.stack(keys), torch.stack(values)  # (K, qk), (K, C)
            ri, rj = divmod(i, s)
            queries = [(ri * rh + a, rj * rw + cc) for a in range(rh) for cc in range(rw)]
            for y, xx in [t for t in queries if t[0] < h and t[1] < w]:  # padded queries are cropped anyway
                heads = []
                for m in range(num_heads):
                    qh = q[n, y, xx, m * hd_qk : (m + 1) * hd_qk] * scale
                    logits = keys[:, m * hd_qk : (m + 1) * hd_qk] @ qh
                    p = torch.softmax(logits, 0)
                    heads.append(p @ values[:, m * hd_v : (m + 1) * hd_v])
                out[n, y, xx] = torch.cat(heads)
    out = out + lepe
    if proj_weight is not None:
        out = out @ proj_weight.T + (0 if proj_bias is None else proj_bias)
    return out


def naive_bra_module(x: Tensor, attn, **overrides) -> Tensor:
    """:func:`naive_bra` with the weights and settings of a ``BiLevelRoutingAttention`` (read, not run)."""
    routing_proj = None
    if isinstance(attn.routing_proj, torch.nn.Linear):
        routing_proj = (attn.routing_proj.weight, attn.routing_proj.bias)
    proj = attn.proj if isinstance(attn.proj, torch.nn.Linear) else None
    kwargs = dict(
        num_heads=attn.num_heads,
        num_regions=attn.num_regions,
        topk=attn.topk,
        qk_dim=attn.qk_dim,
        mask_padding=attn.mask_padding,
        kv_mode=attn.kv_downsample_mode,
        kv_per_region=attn.kv_per_region,
        kv_ratio=attn.kv_downsample_ratio,
        routing_weight=attn.routing_weight,
        routing_proj=routing_proj,
        scale=attn.scale,
    )
    kwargs.update(overrides)
    return naive_bra(
        x,
        attn.qkv.weight,
        attn.qkv.bias,
        None if attn.lepe is None else attn.lepe.weight,
        None if attn.lepe is None else attn.lepe.bias,
        None if proj is None else proj.weight,
        None if proj is None else proj.bias,
        **kwargs,
    )


def naive_global_attention_lepe(
    x: Tensor, qkv_w: Tensor, lepe_w: Tensor, lepe_b: Tensor, proj_w: Tensor, proj_b: Tensor, num_heads: int
) -> Tensor:
    """Official stage-4 attention on x (B, H, W, C): MHSA (qkv without bias, head_dim^-0.5) + DWConv(x), proj."""
    b, h, w, c = x.shape
    d = c // num_heads
    tokens = x.reshape(b, h * w, c)
    qkv = tokens @ qkv_w.T  # (B, N, 3C): [q | k | v], each head-major
    out = torch.zeros_like(tokens)
    for n in range(b):
        for m in range(num_heads):
            qh = qkv[n, :, m * d : (m + 1) * d]
            kh = qkv[n, :, c + m * d : c + (m + 1) * d]
            vh = qkv[n, :, 2 * c + m * d : 2 * c + (m + 1) * d]
            out[n, :, m * d : (m + 1) * d] = torch.softmax(qh @ kh.T * d**-0.5, -1) @ vh
    lepe = depthwise_same(x.permute(0, 3, 1, 2), lepe_w, lepe_b).permute(0, 2, 3, 1).reshape(b, h * w, c)
    return ((out + lepe) @ proj_w.T + proj_b).reshape(b, h, w, c)
