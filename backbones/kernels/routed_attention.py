"""Fused routed attention (BiFormer's token-to-token step): Triton forward and backward kernels.

Math. Region r owns n queries Q_r (all heads side by side, head h on channels [h d_qk, (h+1) d_qk)) and routes to
the ``topk`` regions rows[r, 0..topk-1] (global region rows, batch offset included). Slot t brings the n_kv keys
and values of region rows[r, t], optionally scaled by a soft-routing weight w_rt. Per head, with s = ``scale``:

    S_ij = w_rt s q_i . k_j            for key j of slot t (masked keys: -inf)
    P    = softmax_j(S)                over all topk * n_kv routed keys at once
    O_i  = sum_j P_ij w_rt v_j

Forward (:func:`_fwd_kernel`, one program per (region, head, tile of BLOCK_M queries)): the query tile stays in
registers while the program walks the topk slots, reading each routed row from ``rows``, and the key tiles inside
each slot, straight from the (N, n_kv, qk + C) k|v tensor -- no gathered k/v, no attention matrix. The softmax is
online (running max m, running sum l, accumulator rescaled by exp(m_old - m_new)) in base 2 (log2 e folded into
the scale); accumulation is fp32 for any input dtype, P is cast to V's dtype before the P V product. It writes O
and the log-sum-exp L (base 2) per query and head.

Backward, with D_i = sum_c dO_ic O_ic (computed in PyTorch), P recomputed from L, dP_ij = w dO_i . v_j and
dS = P (dP - D):

    dq_i  = sum_j dS_ij w s k_j                        :func:`_bwd_dq_kernel`, the query-owning program
    dw_rt = sum_{i, j in slot t} dS_ij s q_i . k_j + P_ij dO_i . v_j      (same program, partial per query tile)
    dk_j  = sum_{(r, t) routed to j's region} sum_i dS_ij w s q_i         :func:`_bwd_dkdv_kernel`
    dv_j  = sum_{(r, t) routed to j's region} sum_i P_ij w dO_i

dK/dV are deterministic: no atomics. The backward builds the inverse routing as a CSR list -- a stable argsort of
rows.flatten() groups the (query region, slot) pairs by the key region they read, a cumulative count gives each
key region's range -- and one program per (key region, head, tile of BLOCK_N keys) keeps its dk/dv tile in fp32
registers while it walks the query regions that routed to it (and their query tiles), then writes the tile once,
in the input dtype, into the k|v gradient. Regions nobody routed to get zeros. The soft-routing gradient is summed
from per-(query tile, head) partials in PyTorch, so it is deterministic as well.

Mask (key validity, True = attend). Either the block's broadcast form (N, 1, 1, topk * n_kv) -- one row per query
region -- or the compact (N, n_kv) form per *key* region (validity of a padded key depends on the key only), which
the kernels index with the routed row. A query whose keys are all masked gets a zero output and zero gradients.

Shapes: any n, n_kv and head widths d_qk = qk_dim / heads, d_v = C / heads (they may differ). Tiles are powers of
two >= 16 (``tl.dot``), masked at the edges; query and key tiles are capped at 64 (32 for fp32 or heads wider than
64, with 8 warps: the sizes ptxas compiles without register spills on sm_90), longer regions loop over tiles.
Dtypes float32 / float16 / bfloat16 (q and kv alike; fp32 dots follow torch's ``allow_tf32``). ``rows`` must hold
valid rows (0..N-1): the kernels do not bounds-check them. Double backward is not supported.

Under Triton's CPU interpreter (tests without a GPU) bf16 tiles are widened to fp32 for ``tl.dot``, whose bf16
products the interpreter gets wrong; on a GPU the bf16 tiles go to ``tl.dot`` as they are.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import DTYPES, _common
from ._common import block_dim, dot_precision

__all__ = ["routed_attention"]

_LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation; UPCAST feeds fp32 copies (Triton's interpreter gets bf16 dots wrong)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _kv_tile(kv_base, offs_j, j_ok, k_col, v_col, dk_ok, dv_ok, skv_j, skv_c):
    """The k and v tiles of keys ``offs_j`` of one region (rows of ``kv_base``), zero past the edges."""
    rows = kv_base + offs_j[:, None] * skv_j
    k = tl.load(rows + k_col[None, :] * skv_c, mask=j_ok[:, None] & dk_ok[None, :], other=0.0)
    v = tl.load(rows + v_col[None, :] * skv_c, mask=j_ok[:, None] & dv_ok[None, :], other=0.0)
    return k, v


@triton.jit
def _key_valid(MASK, r, t, row, offs_j, j_ok, sm_r, sm_t, sm_row, sm_j, HAS_MASK: tl.constexpr):
    """Which keys ``offs_j`` of routed region ``row`` (slot t of query region r) take part in the softmax."""
    valid = j_ok
    if HAS_MASK:
        keep = tl.load(MASK + r * sm_r + t * sm_t + row * sm_row + offs_j * sm_j, mask=j_ok, other=0)
        valid = valid & (keep != 0)
    return valid


@triton.jit
def _fwd_kernel(
    Q, KV, ROWS, W, MASK, O, LSE,
    sq_r, sq_i, sq_c,
    skv_r, skv_j, skv_c,
    so_r, so_i, so_c,
    sm_r, sm_t, sm_row, sm_j,
    n, n_kv, topk, qk_dim, d_qk, d_v, scale2,
    HEADS: tl.constexpr, HAS_W: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_rh = tl.program_id(0).to(tl.int64)  # region * HEADS + head
    pid_m = tl.program_id(1)
    r = pid_rh // HEADS
    h = pid_rh % HEADS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < n
    dk_ok = offs_dk < d_qk
    dv_ok = offs_dv < d_v
    k_col = h * d_qk + offs_dk
    v_col = qk_dim + h * d_v + offs_dv

    q = tl.load(
        Q + r * sq_r + offs_m[:, None] * sq_i + k_col[None, :] * sq_c, mask=m_ok[:, None] & dk_ok[None, :], other=0.0
    )
    # A finite start for the running max: a tile whose keys are all masked then gives exp2(-inf) = 0, never NaN.
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for t in range(0, topk):
        row = tl.load(ROWS + r * topk + t)
        w = 1.0
        if HAS_W:
            w = tl.load(W + r * topk + t).to(tl.float32)
        kv_base = KV + row * skv_r
        for j0 in range(0, n_kv, BLOCK_N):
            offs_j = j0 + offs_n
            j_ok = offs_j < n_kv
            k, v = _kv_tile(kv_base, offs_j, j_ok, k_col, v_col, dk_ok, dv_ok, skv_j, skv_c)
            valid = _key_valid(MASK, r, t, row, offs_j, j_ok, sm_r, sm_t, sm_row, sm_j, HAS_MASK)
            s = _dot(q, tl.trans(k), PRECISION, UPCAST) * (scale2 * w)
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            if HAS_W:
                p = p * w
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST)
            m_i = m_new
    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc / l_safe[:, None]
    lse = tl.where(has_keys, m_i + tl.log2(l_safe), float("inf"))  # +inf: P = 0 in backward for keyless queries
    tl.store(
        O + r * so_r + offs_m[:, None] * so_i + (h * d_v + offs_dv)[None, :] * so_c,
        out.to(O.dtype.element_ty),
        mask=m_ok[:, None] & dv_ok[None, :],
    )
    tl.store(LSE + pid_rh * n + offs_m, lse, mask=m_ok)


@triton.jit
def _bwd_dq_kernel(
    Q, KV, ROWS, W, MASK, DO, LSE, DELTA, DQ, DWP,
    sq_r, sq_i, sq_c,
    skv_r, skv_j, skv_c,
    sdo_r, sdo_i, sdo_c,
    sdq_r, sdq_i, sdq_c,
    sm_r, sm_t, sm_row, sm_j,
    n, n_kv, topk, qk_dim, d_qk, d_v, scale, scale2, m_tiles,
    HEADS: tl.constexpr, HAS_W: tl.constexpr, HAS_MASK: tl.constexpr, NEED_DW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_rh = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1)
    r = pid_rh // HEADS
    h = pid_rh % HEADS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < n
    dk_ok = offs_dk < d_qk
    dv_ok = offs_dv < d_v
    k_col = h * d_qk + offs_dk
    v_col = qk_dim + h * d_v + offs_dv

    q = tl.load(
        Q + r * sq_r + offs_m[:, None] * sq_i + k_col[None, :] * sq_c, mask=m_ok[:, None] & dk_ok[None, :], other=0.0
    )
    do = tl.load(
        DO + r * sdo_r + offs_m[:, None] * sdo_i + (h * d_v + offs_dv)[None, :] * sdo_c,
        mask=m_ok[:, None] & dv_ok[None, :],
        other=0.0,
    )
    lse = tl.load(LSE + pid_rh * n + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + pid_rh * n + offs_m, mask=m_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_DQK], dtype=tl.float32)
    for t in range(0, topk):
        row = tl.load(ROWS + r * topk + t)
        w = 1.0
        if HAS_W:
            w = tl.load(W + r * topk + t).to(tl.float32)
        dw = tl.zeros([BLOCK_M], dtype=tl.float32)  # per query, summed when the slot is done
        kv_base = KV + row * skv_r
        for j0 in range(0, n_kv, BLOCK_N):
            offs_j = j0 + offs_n
            j_ok = offs_j < n_kv
            k, v = _kv_tile(kv_base, offs_j, j_ok, k_col, v_col, dk_ok, dv_ok, skv_j, skv_c)
            valid = _key_valid(MASK, r, t, row, offs_j, j_ok, sm_r, sm_t, sm_row, sm_j, HAS_MASK)
            qk = _dot(q, tl.trans(k), PRECISION, UPCAST)
            s = tl.where(valid[None, :], qk * (scale2 * w), float("-inf"))
            p = tl.exp2(s - lse[:, None])
            dov = _dot(do, tl.trans(v), PRECISION, UPCAST)
            ds = p * (dov * w - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, PRECISION, UPCAST) * (scale * w)
            if NEED_DW:
                dw += tl.sum(ds * qk, 1) * scale + tl.sum(p * dov, 1)
        if NEED_DW:
            tl.store(DWP + (pid_rh * m_tiles + pid_m) * topk + t, tl.sum(dw, 0))
    tl.store(
        DQ + r * sdq_r + offs_m[:, None] * sdq_i + k_col[None, :] * sdq_c,
        dq.to(DQ.dtype.element_ty),
        mask=m_ok[:, None] & dk_ok[None, :],
    )


@triton.jit
def _bwd_dkdv_kernel(
    Q, KV, W, MASK, DO, LSE, DELTA, DKV, CSR_START, CSR_ENTRY,
    sq_r, sq_i, sq_c,
    skv_r, skv_j, skv_c,
    sdo_r, sdo_i, sdo_c,
    sdkv_r, sdkv_j, sdkv_c,
    sm_r, sm_t, sm_row, sm_j,
    n, n_kv, topk, qk_dim, d_qk, d_v, scale, scale2,
    HEADS: tl.constexpr, HAS_W: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_kh = tl.program_id(0).to(tl.int64)  # key region * HEADS + head
    pid_n = tl.program_id(1)
    kr = pid_kh // HEADS
    h = pid_kh % HEADS
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_mm = tl.arange(0, BLOCK_M)
    offs_dk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    j_ok = offs_j < n_kv
    dk_ok = offs_dk < d_qk
    dv_ok = offs_dv < d_v
    k_col = h * d_qk + offs_dk
    v_col = qk_dim + h * d_v + offs_dv

    kv_base = KV + kr * skv_r
    k, v = _kv_tile(kv_base, offs_j, j_ok, k_col, v_col, dk_ok, dv_ok, skv_j, skv_c)
    dk = tl.zeros([BLOCK_N, BLOCK_DQK], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    start = tl.load(CSR_START + kr)
    end = tl.load(CSR_START + kr + 1)
    for e in range(start, end):  # the (query region, slot) pairs that routed to this key region
        entry = tl.load(CSR_ENTRY + e)
        r = entry // topk
        t = entry - r * topk
        w = 1.0
        if HAS_W:
            w = tl.load(W + entry).to(tl.float32)
        valid = _key_valid(MASK, r, t, kr, offs_j, j_ok, sm_r, sm_t, sm_row, sm_j, HAS_MASK)
        rh = r * HEADS + h
        for m0 in range(0, n, BLOCK_M):
            offs_m = m0 + offs_mm
            m_ok = offs_m < n
            q = tl.load(
                Q + r * sq_r + offs_m[:, None] * sq_i + k_col[None, :] * sq_c,
                mask=m_ok[:, None] & dk_ok[None, :],
                other=0.0,
            )
            do = tl.load(
                DO + r * sdo_r + offs_m[:, None] * sdo_i + (h * d_v + offs_dv)[None, :] * sdo_c,
                mask=m_ok[:, None] & dv_ok[None, :],
                other=0.0,
            )
            lse = tl.load(LSE + rh * n + offs_m, mask=m_ok, other=float("inf"))
            delta = tl.load(DELTA + rh * n + offs_m, mask=m_ok, other=0.0)
            # Transposed tiles (keys x queries): dk/dv come out without transposing the accumulators.
            s_t = _dot(k, tl.trans(q), PRECISION, UPCAST) * (scale2 * w)
            s_t = tl.where(valid[:, None], s_t, float("-inf"))
            p_t = tl.exp2(s_t - lse[None, :])
            dv += _dot((p_t * w).to(do.dtype), do, PRECISION, UPCAST)
            dp_t = _dot(v, tl.trans(do), PRECISION, UPCAST) * w
            ds_t = p_t * (dp_t - delta[None, :])
            dk += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST) * (scale * w)
    dkv_base = DKV + kr * sdkv_r + offs_j[:, None] * sdkv_j
    tl.store(dkv_base + k_col[None, :] * sdkv_c, dk.to(DKV.dtype.element_ty), mask=j_ok[:, None] & dk_ok[None, :])
    tl.store(dkv_base + v_col[None, :] * sdkv_c, dv.to(DKV.dtype.element_ty), mask=j_ok[:, None] & dv_ok[None, :])


class _Config:
    """Tile sizes and launch parameters of one call (host side)."""

    def __init__(self, n: int, n_kv: int, d_qk: int, d_v: int, dtype: torch.dtype, device: torch.device):
        self.block_dqk = block_dim(d_qk)
        self.block_dv = block_dim(d_v)
        # Sizes that ptxas (sm_90, Triton 3.9) compiles for all three kernels without register spills: fp32 tiles
        # and wide heads take twice the registers, hence smaller tiles / more warps there.
        d = max(self.block_dqk, self.block_dv)
        low = dtype in (torch.float16, torch.bfloat16)
        tile = 64 if (low and d <= 64) or d <= 32 else 32
        self.num_warps = 4 if low and d <= 32 else 8
        self.num_stages = 2
        self.block_m = min(tile, block_dim(n))
        self.block_n = min(tile, block_dim(n_kv))
        self.precision = dot_precision(dtype)
        # Triton's CPU interpreter multiplies bf16 tiles wrongly in tl.dot: there (tests only) the bf16 tiles are
        # widened to fp32 just for the products; loads, stores and the P / dS casts stay bf16. GPUs never upcast.
        self.upcast = _common.widen_bf16_dots(dtype, device)


def _mask_args(mask: Tensor | None, nb: int, topk: int, n_kv: int) -> tuple[Tensor | None, tuple[int, int, int, int]]:
    """The key-valid mask as uint8 and its (query region, slot, key region, key) strides for the kernels."""
    if mask is None:
        return None, (0, 0, 0, 0)
    if mask.dtype != torch.bool:
        raise TypeError(f"routed_attention: mask must be bool (True = attend), got {mask.dtype}")
    if mask.ndim == 2:  # compact: validity per key region (global row) and key
        if tuple(mask.shape) != (nb, n_kv):
            raise ValueError(f"routed_attention: a 2-D mask must be (N, n_kv) = {(nb, n_kv)}, got {tuple(mask.shape)}")
        m = mask.contiguous().view(torch.uint8)
        return m, (0, 0, n_kv, 1)
    if mask.numel() != nb * topk * n_kv or mask.shape[0] != nb:
        raise ValueError(
            f"routed_attention: mask must be (N, n_kv) or (N, 1, 1, topk * n_kv) = {(nb, 1, 1, topk * n_kv)}, "
            f"got {tuple(mask.shape)}"
        )
    m = mask.reshape(nb, topk * n_kv).contiguous().view(torch.uint8)
    return m, (topk * n_kv, n_kv, 0, 1)


# Custom operators (``torch.library``): torch.compile and torch.export keep them in the graph as single nodes
# (backbones::routed_attention and its two backward ops); the fake implementations give the output shapes for any
# symbolic size, the Triton launches run only on real tensors. ``mask`` is the key-valid mask as uint8 and
# ``mask_strides`` its (query region, slot, key region, key) strides (:func:`_mask_args`).


def _dims(q: Tensor, kv: Tensor, rows: Tensor, heads: int, qk_dim: int) -> tuple[int, int, int, int, int, int, int]:
    nb, n, _ = q.shape
    n_kv, width = kv.shape[1], kv.shape[2]
    c = width - qk_dim
    return nb, n, n_kv, c, rows.shape[1], qk_dim // heads, c // heads


def _launch_options(cfg: _Config, heads: int, weight: Tensor | None, mask: Tensor | None) -> dict:
    return dict(
        HEADS=heads, HAS_W=weight is not None, HAS_MASK=mask is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_DQK=cfg.block_dqk, BLOCK_DV=cfg.block_dv,
        PRECISION=cfg.precision, UPCAST=cfg.upcast, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip


@torch.library.custom_op("backbones::routed_attention", mutates_args=())
def _routed_forward_op(
    q: Tensor,
    kv: Tensor,
    weight: Tensor | None,
    rows: Tensor,
    mask: Tensor | None,
    mask_strides: list[int],
    heads: int,
    qk_dim: int,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """(out, fp32 base-2 log-sum-exp per (region, head, query)) of the fused routed attention."""
    nb, n, n_kv, c, topk, d_qk, d_v = _dims(q, kv, rows, heads, qk_dim)
    cfg = _Config(n, n_kv, d_qk, d_v, q.dtype, q.device)
    out = torch.empty(nb, n, c, device=q.device, dtype=q.dtype)
    lse = torch.empty(nb, heads, n, device=q.device, dtype=torch.float32)
    dummy = rows  # any tensor stands in for an absent optional input (never read)
    grid = (nb * heads, triton.cdiv(n, cfg.block_m))
    _fwd_kernel[grid](
        q, kv, rows, dummy if weight is None else weight, dummy if mask is None else mask, out, lse,
        *q.stride(), *kv.stride(), *out.stride(), *mask_strides,
        n, n_kv, topk, qk_dim, d_qk, d_v, scale * _LOG2E,
        **_launch_options(cfg, heads, weight, mask),
    )  # fmt: skip
    return out, lse


@_routed_forward_op.register_fake
def _(q, kv, weight, rows, mask, mask_strides, heads, qk_dim, scale):
    nb, n, _ = q.shape
    return q.new_empty(nb, n, kv.shape[2] - qk_dim), q.new_empty(nb, heads, n, dtype=torch.float32)


@torch.library.custom_op("backbones::routed_attention_backward_dq", mutates_args=())
def _routed_backward_dq_op(
    grad_out: Tensor,
    q: Tensor,
    kv: Tensor,
    weight: Tensor | None,
    rows: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    delta: Tensor,
    mask_strides: list[int],
    heads: int,
    qk_dim: int,
    scale: float,
    need_dw: bool,
) -> tuple[Tensor, Tensor]:
    """(dq, dw): dw is (N, topk) in weight's dtype when ``need_dw``, else an empty placeholder."""
    nb, n, n_kv, c, topk, d_qk, d_v = _dims(q, kv, rows, heads, qk_dim)
    cfg = _Config(n, n_kv, d_qk, d_v, q.dtype, q.device)
    need_dw = bool(need_dw and weight is not None)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    m_tiles = triton.cdiv(n, cfg.block_m)
    dw_part = torch.empty(nb * heads * m_tiles * topk if need_dw else 1, device=q.device, dtype=torch.float32)
    dummy = rows
    _bwd_dq_kernel[(nb * heads, m_tiles)](
        q, kv, rows, dummy if weight is None else weight, dummy if mask is None else mask, grad_out, lse, delta,
        dq, dw_part,
        *q.stride(), *kv.stride(), *grad_out.stride(), *dq.stride(), *mask_strides,
        n, n_kv, topk, qk_dim, d_qk, d_v, scale, scale * _LOG2E, m_tiles,
        NEED_DW=need_dw, **_launch_options(cfg, heads, weight, mask),
    )  # fmt: skip
    if need_dw:
        return dq, dw_part.view(nb, heads * m_tiles, topk).sum(1).to(weight.dtype)
    return dq, q.new_empty(0)


@_routed_backward_dq_op.register_fake
def _(grad_out, q, kv, weight, rows, mask, lse, delta, mask_strides, heads, qk_dim, scale, need_dw):
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    if need_dw and weight is not None:
        return dq, weight.new_empty(rows.shape)
    return dq, q.new_empty(0)


@torch.library.custom_op("backbones::routed_attention_backward_dkdv", mutates_args=())
def _routed_backward_dkdv_op(
    grad_out: Tensor,
    q: Tensor,
    kv: Tensor,
    weight: Tensor | None,
    rows: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    delta: Tensor,
    mask_strides: list[int],
    heads: int,
    qk_dim: int,
    scale: float,
) -> Tensor:
    """The k|v gradient (N, n_kv, qk + C), summed deterministically over the query regions routed to each key."""
    nb, n, n_kv, c, topk, d_qk, d_v = _dims(q, kv, rows, heads, qk_dim)
    cfg = _Config(n, n_kv, d_qk, d_v, q.dtype, q.device)
    # Inverse routing (CSR): entries r * topk + t grouped by the key region rows[r, t] (stable: in query-region
    # order), start[kr] .. start[kr + 1] the range of key region kr. No host sync.
    flat = rows.reshape(-1)
    entries = torch.argsort(flat, stable=True)
    counts = torch.zeros(nb + 1, device=rows.device, dtype=torch.int64)
    counts.scatter_add_(0, flat + 1, torch.ones_like(flat))
    start = counts.cumsum(0)
    dkv = torch.empty(nb, n_kv, kv.shape[2], device=kv.device, dtype=kv.dtype)
    dummy = rows
    _bwd_dkdv_kernel[(nb * heads, triton.cdiv(n_kv, cfg.block_n))](
        q, kv, dummy if weight is None else weight, dummy if mask is None else mask, grad_out, lse, delta, dkv,
        start, entries,
        *q.stride(), *kv.stride(), *grad_out.stride(), *dkv.stride(), *mask_strides,
        n, n_kv, topk, qk_dim, d_qk, d_v, scale, scale * _LOG2E,
        **_launch_options(cfg, heads, weight, mask),
    )  # fmt: skip
    return dkv


@_routed_backward_dkdv_op.register_fake
def _(grad_out, q, kv, weight, rows, mask, lse, delta, mask_strides, heads, qk_dim, scale):
    return kv.new_empty(kv.shape[0], kv.shape[1], kv.shape[2])


def _setup_context(ctx, inputs, output) -> None:
    q, kv, weight, rows, mask, mask_strides, heads, qk_dim, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, kv, weight, rows, mask, out, lse)
    ctx.args = (mask_strides, heads, qk_dim, scale)


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):
    q, kv, weight, rows, mask, out, lse = ctx.saved_tensors
    mask_strides, heads, qk_dim, scale = ctx.args
    need_q, need_kv, need_w = ctx.needs_input_grad[:3]
    nb, n, _ = q.shape
    do = grad_out.contiguous()
    # D_i = rowsum(dO * O) per head, in fp32: (N, heads, n) like lse.
    delta = (do.float() * out.float()).view(nb, n, heads, -1).sum(-1).transpose(1, 2).contiguous()
    args = (do, q, kv, weight, rows, mask, lse, delta, mask_strides, heads, qk_dim, scale)
    dq = dkv = dw = None
    need_dw = bool(need_w and weight is not None)
    if need_q or need_dw:
        dq, dw = _routed_backward_dq_op(*args, need_dw)
        dq, dw = (dq if need_q else None), (dw if need_dw else None)
    if need_kv:
        dkv = _routed_backward_dkdv_op(*args)
    return dq, dkv, dw, None, None, None, None, None, None


_routed_forward_op.register_autograd(_backward, setup_context=_setup_context)


def routed_attention(
    q: Tensor,
    kv: Tensor,
    rows: Tensor,
    mask: Tensor | None,
    heads: int,
    qk_dim: int,
    scale: float,
    weight: Tensor | None = None,
) -> Tensor:
    """Multi-head attention of each region's queries over the k/v of its routed regions, fused (see module doc).

    Args:
        q: (N, n, qk_dim) queries of every region (N = batch * regions).
        kv: (N, n_kv, qk_dim + C) keys | values of every region, same dtype as q (float32, float16 or bfloat16).
        rows: (N, topk) integer, the global region row (0..N-1) of each routed region.
        mask: None, or bool True = key valid: (N, 1, 1, topk * n_kv) per query region (the block's SDPA form) or
            (N, n_kv) per key region (compact, indexed with ``rows``).
        heads: number of heads (divides qk_dim and C).
        qk_dim: width of q and k.
        scale: softmax temperature multiplying q . k.
        weight: None or (N, topk) soft-routing weights scaling the routed k and v (differentiable).

    Returns:
        (N, n, C) in q's dtype. Gradients flow to q, kv and weight; dK/dV are summed deterministically.
    """
    if q.ndim != 3 or kv.ndim != 3 or rows.ndim != 2:
        raise ValueError(
            f"routed_attention: need q (N, n, qk), kv (N, n_kv, qk + C), rows (N, topk), got "
            f"{tuple(q.shape)}, {tuple(kv.shape)}, {tuple(rows.shape)}"
        )
    nb, n, qk = q.shape
    if qk != qk_dim or kv.shape[0] != nb or rows.shape[0] != nb or kv.shape[2] <= qk_dim:
        raise ValueError(
            f"routed_attention: inconsistent shapes q {tuple(q.shape)}, kv {tuple(kv.shape)}, rows "
            f"{tuple(rows.shape)} for qk_dim={qk_dim}"
        )
    c = kv.shape[2] - qk_dim
    if qk_dim % heads or c % heads:
        raise ValueError(f"routed_attention: qk_dim ({qk_dim}) and C ({c}) must be divisible by heads ({heads})")
    if q.dtype != kv.dtype or q.dtype not in DTYPES:
        raise TypeError(f"routed_attention: q and kv must share a dtype among {DTYPES}, got {q.dtype}, {kv.dtype}")
    if rows.dtype.is_floating_point or rows.dtype == torch.bool:
        raise TypeError(f"routed_attention: rows must be an integer tensor, got {rows.dtype}")
    topk, n_kv = rows.shape[1], kv.shape[1]
    rows = rows.to(torch.int64).contiguous()
    mask_u8, mask_strides = _mask_args(mask, nb, topk, n_kv)
    if weight is not None:
        if tuple(weight.shape) != (nb, topk):
            raise ValueError(f"routed_attention: weight must be (N, topk) = {(nb, topk)}, got {tuple(weight.shape)}")
        weight = weight.contiguous()
    if not math.isfinite(scale):
        raise ValueError(f"routed_attention: scale must be finite, got {scale}")
    out, _ = _routed_forward_op(q, kv, weight, rows, mask_u8, list(mask_strides), int(heads), int(qk_dim), float(scale))
    return out
