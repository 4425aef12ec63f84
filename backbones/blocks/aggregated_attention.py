"""Aggregated attention (TransNeXt, CVPR 2024, arXiv:2311.17132) and its full-attention form.

Every query attends, under ONE softmax, to two key sets: its k x k neighbourhood at full resolution
(``window_size``, 3 in TransNeXt) and a pooled map of the whole image (x -> 1x1 conv -> GELU -> adaptive average
pool to Hp x Wp -> LayerNorm, then the same ``kv`` projection). Queries and keys are L2-normalised per head
(cosine attention); with a learnable per-head query embedding e, temperature tau and the length scale
s_n = softplus(tau) * ln(n_valid(n) + Hp * Wp)  (n_valid: window positions inside the map),

    l_loc[n, z]  = s_n (q_n + e) . k_{n+z} + r[z]           z in the window; -inf where n+z leaves the map
    l_pool[n, j] = s_n (q_n + e) . kp_j + P[n, j]
    [a_loc | a_pool] = softmax([l_loc | l_pool])
    out_n = sum_z (a_loc[n, z] + q_n . t_z + b_z) v_{n+z} + sum_j a_pool[n, j] vp_j

r is a per-offset bias (``relative_pos_bias_local``); t_z, b_z are the "learnable tokens" and bias, added AFTER
the softmax with the plain normalised query (those rows no longer sum to 1). P is the continuous relative
position bias: a 2 -> 512 -> heads MLP with ReLU (``cpb_fc1``, ``cpb_fc2``) on log-spaced offsets between a query
pixel and a pooled key's centroid, per axis  d = (i_q - c_k) / (G - 1) * 8,  coord = sign(d) log2(1 + |d|) / 3,
with G the map size at pre-training (``pretrain_grid``). :class:`LengthScaledAttention` is the same attention over
all tokens of the map (ln(N) length scale, no window, no learnable tokens): TransNeXt's last stage.

Any input size. The pooled grid follows the map, (H // pool_ratio, W // pool_ratio) (at least 1), unless
``fixed_pool_size`` pins it (the official "linear" inference mode). ``pos_bias_mode`` picks how P follows the
size: "extrapolate" evaluates the MLP at the actual offsets; "interpolate" evaluates it on the grid
``pos_bias_grid`` (and its pooled grid) and resizes the bias bilinearly over the key and then the query grid,
as the official detection/segmentation backbones do by default. Both agree at the reference size.

Formulation (same numbers as the official unfold-based code, less memory traffic): the neighbourhood terms are
computed offset by offset on shifted views of the (B, H, W, heads, head_dim) maps with a hand-written backward,
never materialising k^2 copies of K and V; the joint softmax is formed from a shared row maximum without
concatenating the two logit blocks (the pooled normaliser is applied after the value product); P is gathered
from the MLP's output on the (per-axis) table of distinct offsets, and in "interpolate" mode through the few
bilinear taps of each output position instead of resizing a reference-size bias tensor.

Shapes: input and output (B, H, W, C).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..kernels import select
from ._checks import check_shape
from ._position_bias import (
    _bias_plan,
    _gather_bias,
    _inverse_softplus,
    _length_scale,
    _pair,
    adaptive_avg_pool_nhwc,
    cpb_coords,
)
from ._windows import is_compiling
from .head_mixture import build_head_mixture

__all__ = ["AggregatedAttention", "LengthScaledAttention", "PosBiasMode", "cpb_coords"]

PosBiasMode = Literal["extrapolate", "interpolate"]
_POS_BIAS_MODES = ("extrapolate", "interpolate")
_CPB_HIDDEN = 512
_TEMPERATURE_INIT = 1 / 0.24  # softplus(temperature) at init


# ----------------------------------------------------------------------------------------------------------------
# Neighbourhood terms on shifted views, (B, H, W, heads, d) layout, with explicit backward.


def _window_offsets(window_size: int) -> list[tuple[int, int]]:
    """Window offsets in row-major order (top-left first), the order of ``relative_pos_bias_local``."""
    pad = window_size // 2
    return [(di, dj) for di in range(-pad, pad + 1) for dj in range(-pad, pad + 1)]


def _shift(n: int, offset: int) -> tuple[slice, slice]:
    """Along an axis of length n: the query positions whose key at ``query + offset`` is inside, and those keys."""
    lo, hi = max(0, -offset), n - max(0, offset)
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    return slice(lo, hi), slice(lo + offset, hi + offset)


def _window_slices(height: int, width: int, window_size: int):
    for z, (di, dj) in enumerate(_window_offsets(window_size)):
        (qr, kr), (qc, kc) = _shift(height, di), _shift(width, dj)
        yield z, (slice(None), qr, qc), (slice(None), kr, kc)


class _NeighbourhoodLogits(torch.autograd.Function):
    """out[b, i, j, h, z] = q[b, i, j, h] . k[b, i + di_z, j + dj_z, h]; ``-inf`` where the key is off the map."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, window_size: int) -> Tensor:
        b, height, width, heads, _ = q.shape
        out = q.new_full((b, height, width, heads, window_size**2), float("-inf"))
        for z, qs, ks in _window_slices(height, width, window_size):
            out[qs + (slice(None), z)] = (q[qs] * k[ks]).sum(-1)
        ctx.save_for_backward(q, k)
        ctx.window_size = window_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        q, k = ctx.saved_tensors
        grad_q = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        grad_k = torch.zeros_like(k) if ctx.needs_input_grad[1] else None
        for z, qs, ks in _window_slices(q.shape[1], q.shape[2], ctx.window_size):
            g = grad[qs + (slice(None), slice(z, z + 1))]
            if grad_q is not None:
                grad_q[qs].addcmul_(g, k[ks])
            if grad_k is not None:
                grad_k[ks].addcmul_(g, q[qs])
        return grad_q, grad_k, None


class _NeighbourhoodAggregate(torch.autograd.Function):
    """out[b, i, j, h] = sum_z w[b, i, j, h, z] v[b, i + di_z, j + dj_z, h]  (off-map keys contribute nothing)."""

    @staticmethod
    def forward(ctx, weight: Tensor, v: Tensor, window_size: int) -> Tensor:
        center = window_size**2 // 2
        out = weight[..., center : center + 1] * v  # the centre offset covers every query
        for z, qs, ks in _window_slices(v.shape[1], v.shape[2], window_size):
            if z != center:
                out[qs].addcmul_(weight[qs + (slice(None), slice(z, z + 1))], v[ks])
        ctx.save_for_backward(weight, v)
        ctx.window_size = window_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        weight, v = ctx.saved_tensors
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[0] else None
        grad_v = torch.zeros_like(v) if ctx.needs_input_grad[1] else None
        for z, qs, ks in _window_slices(v.shape[1], v.shape[2], ctx.window_size):
            g = grad[qs]
            if grad_w is not None:
                grad_w[qs + (slice(None), z)] = (g * v[ks]).sum(-1)
            if grad_v is not None:
                grad_v[ks].addcmul_(weight[qs + (slice(None), slice(z, z + 1))], g)
        return grad_w, grad_v, None


def _aggregated_kernel(*args: Any) -> Tensor:
    """:func:`backbones.kernels.aggregated_attention.aggregated_attention`, imported on first use (that module
    imports Triton); a function of its own because TorchScript refuses import statements in a scripted method."""
    from ..kernels.aggregated_attention import aggregated_attention

    return aggregated_attention(*args)


def _aggregate_torch(
    q_scaled: Tensor,
    k: Tensor,
    v: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    pos_bias: Tensor,
    rel_local: Tensor,
    w_add: Tensor,
    ws: int,
    attn_drop: Callable[[Tensor], Tensor],
    w_add_bias: Tensor | None = None,
) -> Tensor:
    """PyTorch path of the attention core: (B, H, W, heads, hd) from the prepared inputs (see the module doc).

    ``q_scaled``, ``k``, ``v``: (B, H, W, heads, hd); ``k_pool``, ``v_pool``: (B, heads, Np, hd); ``pos_bias``:
    (heads, H * W, Np); ``rel_local``: (heads, ws^2); ``w_add``: (B, H, W, heads, ws^2), added after the softmax
    (plus ``w_add_bias``, (heads, ws^2), if given: the block adds tokens and bias in that order).
    """
    b, height, width, heads, hd = q_scaled.shape
    n = height * width
    # Logits of both key sets.
    logits_local = _NeighbourhoodLogits.apply(q_scaled, k, ws)  # (B, H, W, heads, k^2)
    logits_local = logits_local + rel_local.to(logits_local.dtype)
    q_heads = q_scaled.permute(0, 3, 1, 2, 4).reshape(b, heads, n, hd)
    logits_pool = torch.matmul(q_heads, k_pool.transpose(-2, -1).to(q_heads.dtype))  # (B, heads, N, Hp * Wp)
    logits_pool.add_(pos_bias.to(logits_pool.dtype))

    # One softmax over both blocks without concatenating them: shared row maximum, shared denominator.
    with torch.no_grad():
        row_max = torch.maximum(logits_local.amax(-1), logits_pool.amax(-1).transpose(1, 2).view_as(k[..., 0]))
    exp_local = torch.exp(logits_local - row_max.unsqueeze(-1))
    exp_pool = logits_pool.sub_(row_max.view(b, n, heads).transpose(1, 2).unsqueeze(-1)).exp_()
    denom = exp_local.sum(-1) + exp_pool.sum(-1).transpose(1, 2).view(b, height, width, heads)
    inv_denom = denom.reciprocal()  # (B, H, W, heads)
    attn_local = attn_drop(exp_local * inv_denom.unsqueeze(-1))
    exp_pool = attn_drop(exp_pool)

    weight_local = attn_local + w_add
    if w_add_bias is not None:
        weight_local = weight_local + w_add_bias
    out = _NeighbourhoodAggregate.apply(weight_local, v.to(weight_local.dtype), ws)  # (B, H, W, heads, hd)
    out_pool = torch.matmul(exp_pool, v_pool.to(exp_pool.dtype))  # (B, heads, N, hd)
    out_pool = out_pool.transpose(1, 2).view(b, height, width, heads, hd) * inv_denom.unsqueeze(-1)
    return out + out_pool


def _cpb_position_bias(
    attn: nn.Module, query: tuple[int, int], key: tuple[int, int], ref_key: tuple[int, int] | None
) -> Tensor:
    """(heads, Hq * Wq, Hk * Wk) continuous relative position bias of ``attn`` for a query grid and a key grid.

    A function, not a method: TorchScript calls ``position_bias`` in Python with the scripted module as ``self``,
    which carries only the scripted methods.
    """
    interpolate = attn.pos_bias_mode == "interpolate"
    plan = _bias_plan(
        query,
        key,
        attn.pretrain_grid,
        attn.pos_bias_grid if interpolate else None,
        ref_key if interpolate else None,
        attn.cpb_fc1.weight.device,
    )
    table = plan.table.to(attn.cpb_fc1.weight.dtype)
    fc1, fc2 = attn.cpb_fc1, attn.cpb_fc2  # (F.linear: a scripted submodule is not callable from Python here)
    values = F.linear(F.relu(F.linear(table, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)  # (Uh * Uw, heads)
    return _gather_bias(values.t().reshape(attn.num_heads, *plan.shape), plan)


# ----------------------------------------------------------------------------------------------------------------


class _CosineAttentionBase(nn.Module):
    """Parameters and position bias shared by both attention forms."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        pretrain_grid: int | tuple[int, int],
        pos_bias_mode: PosBiasMode,
        pos_bias_grid: int | tuple[int, int] | None,
        proj_drop: float,
        attn_drop: float,
        dd: dict,
        moh: dict | None = None,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"{type(self).__name__}: dim {dim} must be divisible by num_heads {num_heads}")
        if pos_bias_mode not in _POS_BIAS_MODES:
            raise ValueError(f"pos_bias_mode must be one of {_POS_BIAS_MODES}, got {pos_bias_mode!r}")
        if pos_bias_mode == "interpolate" and pos_bias_grid is None:
            raise ValueError("pos_bias_mode='interpolate' needs pos_bias_grid (the map size the bias is computed at)")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.pretrain_grid = _pair(pretrain_grid, "pretrain_grid")
        self.pos_bias_mode = pos_bias_mode
        self.pos_bias_grid = _pair(pos_bias_grid, "pos_bias_grid")
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), _inverse_softplus(_TEMPERATURE_INIT), **dd))
        self.query_embedding = nn.Parameter(torch.empty(num_heads, 1, self.head_dim, **dd))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        # Mixture-of-Head routing of the head outputs (MoH-ViT); None: plain multi-head attention, no keys added.
        self.moh = build_head_mixture(dim, num_heads, moh, type(self).__name__, **dd)

    def _init_cpb(self, dd: dict) -> None:
        self.cpb_fc1 = nn.Linear(2, _CPB_HIDDEN, **dd)
        self.cpb_fc2 = nn.Linear(_CPB_HIDDEN, self.num_heads, **dd)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, pretrain_grid={self.pretrain_grid}, "
            f"pos_bias_mode={self.pos_bias_mode!r}, pos_bias_grid={self.pos_bias_grid}"
        )


@register_notrace_module  # reason: the position-bias plan and length scale are computed from the input size
class AggregatedAttention(_CosineAttentionBase):
    """Neighbourhood + pooled-map attention under one softmax (see the module docstring for the math).

    Args:
        dim: channels C.
        num_heads: heads (head_dim = C / heads; 24 in every TransNeXt).
        window_size: odd side k of the neighbourhood.
        pool_ratio: pooled grid = map size // pool_ratio (``sr_ratio`` in the official code).
        fixed_pool_size: if set, the pooled grid is this size at every input size ("linear" mode).
        pretrain_grid: map size at the pre-training resolution, normalises the CPB offsets (224 px -> 56 at
            stride 4).
        pos_bias_mode: "extrapolate" (CPB at the actual offsets) or "interpolate" (CPB on ``pos_bias_grid``,
            bilinearly resized).
        pos_bias_grid: reference map size for "interpolate".
        qkv_bias: bias in ``q`` and ``kv``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after ``proj``.
        moh: ``dict(shared_heads=S, routed_heads=k)`` re-weights the head outputs per token before ``proj``
            (:class:`backbones.blocks.head_mixture.HeadMixture`, MoH-ViT); None (default): plain heads.

    State-dict keys as the official model, except ``sr`` -> ``pool_proj`` and ``norm`` -> ``pool_norm`` (and the MoH
    router ``wg*`` -> ``moh.wg*``).

    Kernels: the attention core (both logit blocks, the joint softmax, the learnable-token term and the value sums)
    runs as the fused Triton kernel :func:`backbones.kernels.aggregated_attention.aggregated_attention` for CUDA
    tensors when Triton is available, as PyTorch otherwise; ``BACKBONES_KERNELS=torch|triton`` forces one (see
    :func:`backbones.kernels.select`). Not supported by the kernel (PyTorch in auto mode, an error when forced):
    ``attn_drop > 0`` in training mode, float64. ``last_kernel`` records the choice of the latest forward
    ("torch" or "triton"; None before the first call).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window_size: int = 3,
        pool_ratio: int = 8,
        fixed_pool_size: int | tuple[int, int] | None = None,
        pretrain_grid: int | tuple[int, int] = 56,
        pos_bias_mode: PosBiasMode = "extrapolate",
        pos_bias_grid: int | tuple[int, int] | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        moh: dict | None = None,
        device=None,
        dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__(dim, num_heads, pretrain_grid, pos_bias_mode, pos_bias_grid, proj_drop, attn_drop, dd, moh)
        if window_size < 1 or window_size % 2 != 1:
            raise ValueError(f"AggregatedAttention: window_size must be a positive odd int, got {window_size}")
        if pool_ratio < 1:
            raise ValueError(f"AggregatedAttention: pool_ratio must be >= 1, got {pool_ratio}")
        self.window_size = window_size
        self.pool_ratio = pool_ratio
        self.fixed_pool_size = _pair(fixed_pool_size, "fixed_pool_size")
        local_len = window_size**2

        self.relative_pos_bias_local = nn.Parameter(torch.empty(num_heads, local_len, **dd))
        self.learnable_tokens = nn.Parameter(torch.empty(num_heads, self.head_dim, local_len, **dd))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, local_len, **dd))
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.pool_proj = nn.Conv2d(dim, dim, kernel_size=1, **dd)
        self.pool_act = nn.GELU()
        self.pool_norm = nn.LayerNorm(dim, **dd)  # default eps 1e-5, as the official
        self._init_cpb(dd)
        self.last_kernel: str | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.query_embedding, std=0.02)
        nn.init.trunc_normal_(self.relative_pos_bias_local, std=4e-4)
        nn.init.trunc_normal_(self.learnable_tokens, std=0.02)
        nn.init.zeros_(self.learnable_bias)
        self.temperature.fill_(_inverse_softplus(_TEMPERATURE_INIT))

    def pool_size(self, height: int, width: int) -> tuple[int, int]:
        """Pooled grid for an H x W map."""
        if self.fixed_pool_size is not None:
            return self.fixed_pool_size
        return max(1, height // self.pool_ratio), max(1, width // self.pool_ratio)

    @torch.jit.ignore  # TorchScript calls it in Python: the plan is cached geometry
    def position_bias(self, height, width):
        # type: (int, int) -> Tensor
        # (a type comment: TorchScript cannot read postponed annotations of an ignored method)
        """(heads, H * W, Hp * Wp) bias of the pooled keys for an H x W map."""
        ref_key = None
        if self.pos_bias_mode == "interpolate":
            ref_key = self.pool_size(*self.pos_bias_grid)
        return _cpb_position_bias(self, (height, width), self.pool_size(height, width), ref_key)

    @torch.jit.ignore  # TorchScript calls it in Python (cached geometry)
    def length_scale(self, height, width, num_pooled, like):
        # type: (int, int, int, Tensor) -> Tensor
        """(H, W, 1, 1) ln(in-map window positions + pooled keys) per pixel, float64, on the device of ``like``."""
        return _length_scale(height, width, self.window_size, num_pooled, like.device)

    @torch.jit.ignore  # TorchScript calls it in Python (autograd functions over shifted views)
    def _attend_torch(self, q_scaled, k, v, k_pool, v_pool, pos_bias, tokens, token_bias):
        # type: (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) -> Tensor
        args = (q_scaled, k, v, k_pool, v_pool, pos_bias, self.relative_pos_bias_local)
        p, training = self.attn_drop.p, self.training  # (a scripted submodule is not callable from Python here)

        def attn_drop(t: Tensor) -> Tensor:
            return F.dropout(t, p, training)

        return _aggregate_torch(*args, tokens, self.window_size, attn_drop=attn_drop, w_add_bias=token_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"AggregatedAttention: expected x of shape (B, H, W, {self.dim})")
        b, height, width, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        heads, hd, ws = self.num_heads, self.head_dim, self.window_size
        pool_h, pool_w = self.pool_size(height, width)
        num_pooled = pool_h * pool_w

        # Queries: normalised, plus the query embedding, times the per-pixel length scale and temperature.
        q_norm = F.normalize(self.q(x).view(b, height, width, heads, hd), dim=-1)
        length = self.length_scale(height, width, num_pooled, x).to(q_norm.dtype)  # (H, W, 1, 1)
        scale = F.softplus(self.temperature).view(heads, 1).to(q_norm.dtype) * length  # (H, W, heads, 1)
        q_scaled = (q_norm + self.query_embedding.view(heads, hd)) * scale
        k, v = self.kv(x).view(b, height, width, 2, heads, hd).unbind(3)
        k = F.normalize(k, dim=-1).to(q_scaled.dtype)

        # Pooled keys/values (official order: 1x1 conv, GELU, pool, LayerNorm; the same kv projection).
        # The 1x1 conv as a linear over (B, H, W, C) (faster on CPU than a conv on a channels-last view).
        pooled = self.pool_act(F.linear(x, self.pool_proj.weight.flatten(1), self.pool_proj.bias))
        if torch.jit.is_scripting():  # TorchScript compiles only this branch
            pooled = F.adaptive_avg_pool2d(pooled.permute(0, 3, 1, 2), (pool_h, pool_w))
        else:
            pooled = adaptive_avg_pool_nhwc(pooled, pool_h, pool_w)  # (B, C, Hp, Wp)
        pooled = pooled.flatten(2).transpose(1, 2)  # (B, Hp * Wp, C)
        kv_pool = self.kv(self.pool_norm(pooled)).view(b, num_pooled, 2, heads, hd)
        k_pool, v_pool = kv_pool.permute(2, 0, 3, 1, 4).unbind(0)
        k_pool = F.normalize(k_pool, dim=-1)  # (B, heads, Hp * Wp, hd)

        pos_bias = self.position_bias(height, width)  # (heads, N, Hp * Wp)
        # Learnable tokens: a query-dependent, unnormalised addition to the neighbourhood weights.
        tokens = torch.einsum("bijhd,hdz->bijhz", q_norm, self.learnable_tokens.to(q_norm.dtype))
        token_bias = self.learnable_bias.view(heads, ws * ws).to(tokens.dtype)

        if torch.jit.is_scripting():  # TorchScript: the PyTorch path
            out = self._attend_torch(q_scaled, k, v, k_pool, v_pool, pos_bias, tokens, token_bias)
        else:
            drop = self.training and self.attn_drop.p > 0
            unsupported = f"attn_drop={self.attn_drop.p} in training mode" if drop else None
            backend = select("AggregatedAttention", q_scaled, unsupported=unsupported)
            self.last_kernel = backend
            args = (q_scaled, k, v, k_pool, v_pool, pos_bias, self.relative_pos_bias_local)
            if backend == "triton":
                if torch.is_autocast_enabled(x.device.type):  # F.normalize promotes to fp32; the kernel follows q
                    amp_dtype = torch.get_autocast_dtype(x.device.type)
                    args = (q_scaled.to(amp_dtype),) + args[1:]
                out = _aggregated_kernel(*args, tokens + token_bias, ws)
            else:
                out = self._attend_torch(q_scaled, k, v, k_pool, v_pool, pos_bias, tokens, token_bias)
        if self.moh is not None:
            out = self.moh(x, out.reshape(b, height, width, heads, hd))
        out = out.reshape(b, height, width, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, window_size={self.window_size}, pool_ratio={self.pool_ratio}, "
            f"fixed_pool_size={self.fixed_pool_size}"
        )


@register_notrace_module  # reason: the position-bias plan is computed from the input size
class LengthScaledAttention(_CosineAttentionBase):
    """Cosine attention over all tokens with query embedding, ln(N) length scale and CPB (TransNeXt stage 4).

    Args as :class:`AggregatedAttention` (no window, no pooling; ``moh`` too). State-dict keys as the official
    ``Attention`` (the MoH router ``wg*`` as ``moh.wg*``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        pretrain_grid: int | tuple[int, int] = 7,
        pos_bias_mode: PosBiasMode = "extrapolate",
        pos_bias_grid: int | tuple[int, int] | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused_attn: bool = True,
        moh: dict | None = None,
        device=None,
        dtype=None,
    ):
        dd = dict(device=device, dtype=dtype)
        super().__init__(dim, num_heads, pretrain_grid, pos_bias_mode, pos_bias_grid, proj_drop, attn_drop, dd, moh)
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self._init_cpb(dd)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.query_embedding, std=0.02)
        self.temperature.fill_(_inverse_softplus(_TEMPERATURE_INIT))

    @torch.jit.ignore  # TorchScript calls it in Python (cached geometry)
    def position_bias(self, height, width):
        # type: (int, int) -> Tensor
        """(heads, N, N) bias for an H x W map."""
        return _cpb_position_bias(self, (height, width), (height, width), self.pos_bias_grid)

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"LengthScaledAttention: expected x of shape (B, H, W, {self.dim})")
        b, height, width, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        n = height * width
        # qkv output channels are [q | k | v], each head-major (official layout).
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if is_compiling():  # ln N as a 0-d tensor: math.log would fix N to the example's (torch.export)
            scale = F.softplus(self.temperature) * torch.full((), n, dtype=torch.float64, device=x.device).log()
        else:
            scale = F.softplus(self.temperature) * math.log(n)  # (heads, 1, 1)
        q = (F.normalize(q, dim=-1) + self.query_embedding) * scale.to(q.dtype)
        k = F.normalize(k, dim=-1).to(q.dtype)
        bias = self.position_bias(height, width).to(q.dtype)
        if self.fused_attn:
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=bias, dropout_p=p, scale=1.0)
        else:
            attn = self.attn_drop((q @ k.transpose(-2, -1) + bias).softmax(dim=-1))
            out = attn @ v.to(attn.dtype)
        out = out.transpose(1, 2)  # (B, N, heads, d)
        if self.moh is not None:
            out = self.moh(x.reshape(b, n, c), out)
        out = out.reshape(b, height, width, c)
        return self.proj_drop(self.proj(out))
