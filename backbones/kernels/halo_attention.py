"""Fused halo attention (HaloNet): b x b query blocks against their (b + 2h)^2 key/value windows, read in place.

For query block (bi, bj) of image/head ``g`` the keys and values are the pixels of the w x w window (w = b + 2h)
whose top-left corner is (bi * b, bj * b) in the padded key/value map (the map is zero-padded by h around the image
and to a multiple of b, so the window of a block is a plain w x w sub-rectangle of it). With window rows/columns
(r, c) and queries q of the block,

    a(q, (r, c)) = scale * q.k[r, c] + rel_h[q, r] + rel_w[q, c]
    out(q) = sum_{r, c} softmax_{(r, c)}(a(q, .)) v[r, c]

where rel_h / rel_w are the (n, L, w) relative-position logits of the block (the padding mask folded in as -inf when
padded keys are excluded from the softmax). Nothing is gathered: the kernels read each key tile from the padded
(G, Hp, Wp, d_qk + d_v) map (k channels first, then v) by its map coordinates.

Forward (:func:`_halo_fwd_kernel`): one program per (block, tile of BLOCK_M queries). The window is walked in tiles
of ROWS whole window rows by BLOCK_W (w rounded up to a power of two) columns, so a tile's relative logits are the
broadcast sum of a (BLOCK_M, ROWS) slice of rel_h and the (BLOCK_M, BLOCK_W) rel_w, loaded once: no per-key gather.
Logits (fp32), online softmax with a running max / sum and rescaled fp32 accumulator, then out and the log-sum-exp.

Backward (:func:`_halo_bwd_kernel`): same programs and tiles. The probabilities are recomputed from the saved
log-sum-exp, dS = P * (dO v^T - delta) with delta = rowsum(dO * O) precomputed; dQ = scale * dS k is accumulated
in registers by the program that owns the queries; since every (query, window row) lies in exactly one row tile,
d rel_h = the per-row sums of dS is stored directly, d rel_w (per-column sums) is accumulated over the tiles.
dK = scale * dS^T q and dV = P^T dO are added into an fp32 gradient of the padded map by atomic adds (windows
overlap through the halo), so their summation order -- and the last bits of those gradients -- is nondeterministic
on a GPU. The caller's autograd then takes the map gradient back through its padding and projection.

Strided queries (stride 2, even b) need nothing special: a block then has (b / 2)^2 queries, while its window is
still the w x w rectangle at step b of the full-resolution map; likewise the average-pool variant is plain stride-1
attention for the kernel.

Matmul operands stay in the input dtype (fp16 / bf16 / fp32, TF32 only where torch allows it for fp32), P and dS
are cast to the operand dtype before their products as flash attention does; every accumulation is fp32. Memory
beyond the inputs: out, an fp32 log-sum-exp per query, and in the backward the fp32 map gradient. Under Triton's
CPU interpreter (tests) bf16 operands are widened to fp32 right before each product, exactly (its bf16 dot is wrong).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import DTYPES, _common
from ._common import block_dim, dot_precision

__all__ = ["halo_attention"]

_NUM_STAGES = 2


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr, F32_OPERANDS: tl.constexpr):
    """a @ b with an fp32 accumulator; F32_OPERANDS (Triton's CPU interpreter only, whose bf16 ``tl.dot`` is wrong)
    widens the operands first, which is exact: the same products as the native low-precision dot."""
    if F32_OPERANDS:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _key_tile_ptrs(
    kv_base,
    r0,
    block_row,
    block_col,
    stride_kh,
    stride_kw,
    stride_kc,
    channel0,
    WIN,
    D,
    BLOCK_D: tl.constexpr,
    BLOCK_W: tl.constexpr,
    ROWS: tl.constexpr,
):
    """(ROWS * BLOCK_W, BLOCK_D) tile of window rows r0 .. r0 + ROWS - 1 (channels channel0 .. channel0 + D - 1) read
    from the padded map, zeros outside the window / channels; and the tile's key validity (ROWS * BLOCK_W,)."""
    offs_s = tl.arange(0, ROWS * BLOCK_W)
    key_row = r0 + offs_s // BLOCK_W
    key_col = offs_s % BLOCK_W
    valid = (key_row < WIN) & (key_col < WIN)
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = (
        kv_base
        + (block_row + key_row)[:, None] * stride_kh
        + (block_col + key_col)[:, None] * stride_kw
        + (channel0 + offs_d)[None, :] * stride_kc
    )
    return ptrs, valid[:, None] & (offs_d[None, :] < D), valid


@triton.jit
def _halo_fwd_kernel(
    Q,
    KV,
    RH,
    RW,
    O,
    LSE,
    stride_qn,
    stride_ql,
    stride_qd,
    stride_kg,
    stride_kh,
    stride_kw,
    stride_kc,
    stride_hn,
    stride_hl,
    stride_hw,
    stride_wn,
    stride_wl,
    stride_ww,
    stride_on,
    stride_ol,
    stride_od,
    L,
    NH,
    NW,
    BLK,
    WIN,
    D_QK,
    D_V,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_W: tl.constexpr,
    ROWS: tl.constexpr,
    PRECISION: tl.constexpr,
    F32_OPERANDS: tl.constexpr,
):
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1)
    # block index n = ((g * NH) + bi) * NW + bj
    bj = pid_n % NW
    bi = (pid_n // NW) % NH
    g = pid_n // (NW * NH)
    kv_base = KV + g * stride_kg
    block_row = bi * BLK
    block_col = bj * BLK

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_valid = offs_m < L
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_w = tl.arange(0, BLOCK_W)
    offs_r = tl.arange(0, ROWS)

    q = tl.load(
        Q + pid_n * stride_qn + offs_m[:, None] * stride_ql + offs_dqk[None, :] * stride_qd,
        mask=m_valid[:, None] & (offs_dqk[None, :] < D_QK),
        other=0.0,
    )
    # column logits of the whole window, shared by every row tile
    rel_w = tl.load(
        RW + pid_n * stride_wn + offs_m[:, None] * stride_wl + offs_w[None, :] * stride_ww,
        mask=m_valid[:, None] & (offs_w[None, :] < WIN),
        other=0.0,
    ).to(tl.float32)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)

    for r0 in range(0, WIN, ROWS):
        k_ptrs, k_mask, valid = _key_tile_ptrs(
            kv_base, r0, block_row, block_col, stride_kh, stride_kw, stride_kc, 0, WIN, D_QK, BLOCK_DQK, BLOCK_W, ROWS
        )
        v_ptrs, v_mask, _ = _key_tile_ptrs(
            kv_base, r0, block_row, block_col, stride_kh, stride_kw, stride_kc, D_QK, WIN, D_V, BLOCK_DV, BLOCK_W, ROWS
        )
        k = tl.load(k_ptrs, mask=k_mask, other=0.0)
        v = tl.load(v_ptrs, mask=v_mask, other=0.0)
        rows = r0 + offs_r
        rel_h = tl.load(
            RH + pid_n * stride_hn + offs_m[:, None] * stride_hl + rows[None, :] * stride_hw,
            mask=m_valid[:, None] & (rows[None, :] < WIN),
            other=0.0,
        ).to(tl.float32)
        bias = tl.reshape(rel_h[:, :, None] + rel_w[:, None, :], (BLOCK_M, ROWS * BLOCK_W))

        s = _mm(q, tl.trans(k), PRECISION, F32_OPERANDS) * scale + bias
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # a row whose keys so far are all -inf (masked padding) keeps a finite reference point
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_ref)
        p = tl.exp(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, PRECISION, F32_OPERANDS)
        m_i = m_new

    has_keys = l_i > 0.0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    # +inf for a row without any key: the backward's recomputed probabilities are then exactly 0
    lse = tl.where(has_keys, m_i + tl.log(l_i), float("inf"))
    tl.store(
        O + pid_n * stride_on + offs_m[:, None] * stride_ol + offs_dv[None, :] * stride_od,
        out.to(O.dtype.element_ty),
        mask=m_valid[:, None] & (offs_dv[None, :] < D_V),
    )
    tl.store(LSE + pid_n * L + offs_m, lse, mask=m_valid)


@triton.jit
def _halo_bwd_kernel(
    Q,
    KV,
    RH,
    RW,
    DO,
    LSE,
    DELTA,
    DQ,
    DKV,
    DRH,
    DRW,
    stride_qn,
    stride_ql,
    stride_qd,
    stride_kg,
    stride_kh,
    stride_kw,
    stride_kc,
    stride_gg,
    stride_gh,
    stride_gw,
    stride_gc,
    stride_hn,
    stride_hl,
    stride_hw,
    stride_wn,
    stride_wl,
    stride_ww,
    stride_don,
    stride_dol,
    stride_dod,
    L,
    NH,
    NW,
    BLK,
    WIN,
    D_QK,
    D_V,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_W: tl.constexpr,
    ROWS: tl.constexpr,
    PRECISION: tl.constexpr,
    F32_OPERANDS: tl.constexpr,
):
    """DQ, DRH, DRW: contiguous (n, L, d_qk) / (n, L, w) / (n, L, w); DKV: fp32 (G, Hp, Wp, d_qk + d_v), zeroed."""
    pid_n = tl.program_id(0).to(tl.int64)
    pid_m = tl.program_id(1)
    bj = pid_n % NW
    bi = (pid_n // NW) % NH
    g = pid_n // (NW * NH)
    kv_base = KV + g * stride_kg
    dkv_base = DKV + g * stride_gg
    block_row = bi * BLK
    block_col = bj * BLK

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_valid = offs_m < L
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_w = tl.arange(0, BLOCK_W)
    offs_r = tl.arange(0, ROWS)

    q = tl.load(
        Q + pid_n * stride_qn + offs_m[:, None] * stride_ql + offs_dqk[None, :] * stride_qd,
        mask=m_valid[:, None] & (offs_dqk[None, :] < D_QK),
        other=0.0,
    )
    do = tl.load(
        DO + pid_n * stride_don + offs_m[:, None] * stride_dol + offs_dv[None, :] * stride_dod,
        mask=m_valid[:, None] & (offs_dv[None, :] < D_V),
        other=0.0,
    )
    # padding query rows: lse = +inf makes their probabilities (hence all their contributions) exactly 0
    lse = tl.load(LSE + pid_n * L + offs_m, mask=m_valid, other=float("inf"))
    delta = tl.load(DELTA + pid_n * L + offs_m, mask=m_valid, other=0.0)
    rel_w = tl.load(
        RW + pid_n * stride_wn + offs_m[:, None] * stride_wl + offs_w[None, :] * stride_ww,
        mask=m_valid[:, None] & (offs_w[None, :] < WIN),
        other=0.0,
    ).to(tl.float32)

    dq = tl.zeros((BLOCK_M, BLOCK_DQK), dtype=tl.float32)
    drel_w = tl.zeros((BLOCK_M, BLOCK_W), dtype=tl.float32)

    for r0 in range(0, WIN, ROWS):
        k_ptrs, k_mask, valid = _key_tile_ptrs(
            kv_base, r0, block_row, block_col, stride_kh, stride_kw, stride_kc, 0, WIN, D_QK, BLOCK_DQK, BLOCK_W, ROWS
        )
        v_ptrs, v_mask, _ = _key_tile_ptrs(
            kv_base, r0, block_row, block_col, stride_kh, stride_kw, stride_kc, D_QK, WIN, D_V, BLOCK_DV, BLOCK_W, ROWS
        )
        dk_ptrs, _, _ = _key_tile_ptrs(
            dkv_base, r0, block_row, block_col, stride_gh, stride_gw, stride_gc, 0, WIN, D_QK, BLOCK_DQK, BLOCK_W, ROWS
        )
        dv_ptrs, _, _ = _key_tile_ptrs(
            dkv_base, r0, block_row, block_col, stride_gh, stride_gw, stride_gc, D_QK, WIN, D_V, BLOCK_DV, BLOCK_W, ROWS
        )
        k = tl.load(k_ptrs, mask=k_mask, other=0.0)
        v = tl.load(v_ptrs, mask=v_mask, other=0.0)
        rows = r0 + offs_r
        rh_offs = offs_m[:, None] * stride_hl + rows[None, :] * stride_hw
        rh_mask = m_valid[:, None] & (rows[None, :] < WIN)
        rel_h = tl.load(RH + pid_n * stride_hn + rh_offs, mask=rh_mask, other=0.0).to(tl.float32)
        bias = tl.reshape(rel_h[:, :, None] + rel_w[:, None, :], (BLOCK_M, ROWS * BLOCK_W))

        s = _mm(q, tl.trans(k), PRECISION, F32_OPERANDS) * scale + bias
        s = tl.where(valid[None, :], s, float("-inf"))
        p = tl.exp(s - lse[:, None])
        dp = _mm(do, tl.trans(v), PRECISION, F32_OPERANDS)
        ds = p * (dp - delta[:, None])

        dv_tile = _mm(tl.trans(p.to(do.dtype)), do, PRECISION, F32_OPERANDS)
        dk_tile = _mm(tl.trans(ds.to(q.dtype)), q, PRECISION, F32_OPERANDS) * scale
        tl.atomic_add(dv_ptrs, dv_tile, mask=v_mask, sem="relaxed")
        tl.atomic_add(dk_ptrs, dk_tile, mask=k_mask, sem="relaxed")
        dq += _mm(ds.to(k.dtype), k, PRECISION, F32_OPERANDS)

        ds3 = tl.reshape(ds, (BLOCK_M, ROWS, BLOCK_W))
        # every (query, window row) lies in exactly one row tile: its row gradient is final here
        tl.store(DRH + pid_n * L * WIN + offs_m[:, None] * WIN + rows[None, :], tl.sum(ds3, axis=2), mask=rh_mask)
        drel_w += tl.sum(ds3, axis=1)

    tl.store(
        DQ + pid_n * L * D_QK + offs_m[:, None] * D_QK + offs_dqk[None, :],
        dq * scale,
        mask=m_valid[:, None] & (offs_dqk[None, :] < D_QK),
    )
    tl.store(
        DRW + pid_n * L * WIN + offs_m[:, None] * WIN + offs_w[None, :],
        drel_w,
        mask=m_valid[:, None] & (offs_w[None, :] < WIN),
    )


def _f32_operands(q: Tensor) -> bool:
    """Widen bf16 matmul operands under Triton's interpreter (CPU tensors), whose bf16 ``tl.dot`` is wrong."""
    return _common.widen_bf16_dots(q.dtype, q.device)


def _config(length: int, window: int, d_qk: int, d_v: int, dtype: torch.dtype, backward: bool) -> dict:
    """Tile sizes and warps, chosen from ptxas's register report for sm_90 (not timed on a GPU): no spills in the
    forward and at most ~150 bytes in the backward for head widths up to 128 and windows up to 18. Tensor-core dots
    (fp16 / bf16 / TF32) take 64-query tiles (32 in a backward with head widths above 64); exact fp32 dots, which
    run on the FMA units and hold far more registers, 32 queries x 16 keys; the backward, more tiles live, 8 warps."""
    precision = dot_precision(dtype)
    if dtype == torch.float32 and precision == "ieee":
        max_m, keys = 32, 16
    elif backward:
        max_m, keys = (64 if dtype != torch.float32 and max(d_qk, d_v) <= 64 else 32), 32
    else:
        max_m, keys = 64, (32 if dtype == torch.float32 else 64)
    block_w = triton.next_power_of_2(window)
    return dict(
        BLOCK_M=min(max_m, block_dim(length)),
        BLOCK_DQK=block_dim(d_qk),
        BLOCK_DV=block_dim(d_v),
        BLOCK_W=block_w,
        ROWS=max(1, keys // block_w),  # whole window rows per tile, >= 16 keys (tl.dot)
        PRECISION=precision,
        num_warps=8 if backward or max(d_qk, d_v) > 64 else 4,
        num_stages=_NUM_STAGES,
    )


def _grid_sizes(q: Tensor, kv_map: Tensor, rel_h: Tensor, block: int, d_qk: int) -> tuple[int, int, int]:
    """Check the shapes; return (blocks per column, blocks per row, d_v)."""
    if q.dim() != 3 or kv_map.dim() != 4 or rel_h.dim() != 3:
        raise ValueError("halo_attention: q (n, L, d_qk), kv_map (G, Hp, Wp, d_qk + d_v), rel_h / rel_w (n, L, w)")
    groups, hp, wp, channels = kv_map.shape
    n, length, window = rel_h.shape
    if (hp - window) % block or (wp - window) % block or hp < window or wp < window:
        raise ValueError(
            f"halo_attention: padded map {hp}x{wp} is not (blocks - 1) * {block} + window {window} on each side"
        )
    nh, nw = (hp - window) // block + 1, (wp - window) // block + 1
    if n != groups * nh * nw or q.shape[:2] != (n, length) or q.shape[-1] != d_qk or channels <= d_qk:
        raise ValueError(
            f"halo_attention: q {tuple(q.shape)}, rel {tuple(rel_h.shape)} do not match {groups} x {nh} x {nw} "
            f"blocks of the map {tuple(kv_map.shape)} with d_qk={d_qk}"
        )
    if q.dtype not in DTYPES or kv_map.dtype != q.dtype:
        raise TypeError(f"halo_attention: q and kv_map must share one of {DTYPES}, got {q.dtype}, {kv_map.dtype}")
    return nh, nw, channels - d_qk


# Custom operators (``torch.library``): torch.compile and torch.export keep them in the graph as single nodes
# (backbones::halo_attention / halo_attention_backward); the fake implementations give the output shapes for any
# symbolic size, the Triton launch runs only on real tensors.


@torch.library.custom_op("backbones::halo_attention", mutates_args=())
def _halo_forward_op(
    q: Tensor, kv_map: Tensor, rel_h: Tensor, rel_w: Tensor, block: int, d_qk: int, scale: float
) -> tuple[Tensor, Tensor]:
    """(out, fp32 log-sum-exp per query) of the fused halo attention."""
    nh, nw, d_v = _grid_sizes(q, kv_map, rel_h, block, d_qk)
    n, length, window = rel_h.shape
    cfg = _config(length, window, d_qk, d_v, q.dtype, backward=False)
    out = torch.empty(n, length, d_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(n, length, dtype=torch.float32, device=q.device)
    grid = (n, triton.cdiv(length, cfg["BLOCK_M"]))
    _halo_fwd_kernel[grid](
        q, kv_map, rel_h, rel_w, out, lse,
        *q.stride(), *kv_map.stride(), *rel_h.stride(), *rel_w.stride(), *out.stride(),
        length, nh, nw, block, window, d_qk, d_v, float(scale),
        F32_OPERANDS=_f32_operands(q), **cfg,
    )  # fmt: skip
    return out, lse


@_halo_forward_op.register_fake
def _(q, kv_map, rel_h, rel_w, block, d_qk, scale):
    n, length, _ = rel_h.shape
    d_v = kv_map.shape[-1] - d_qk
    return q.new_empty(n, length, d_v), q.new_empty(n, length, dtype=torch.float32)


@torch.library.custom_op("backbones::halo_attention_backward", mutates_args=())
def _halo_backward_op(
    grad_out: Tensor,
    q: Tensor,
    kv_map: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    out: Tensor,
    lse: Tensor,
    block: int,
    d_qk: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of q, kv_map, rel_h and rel_w."""
    nh, nw, d_v = _grid_sizes(q, kv_map, rel_h, block, d_qk)
    n, length, window = rel_h.shape
    cfg = _config(length, window, d_qk, d_v, q.dtype, backward=True)
    delta = (grad_out.float() * out.float()).sum(-1)
    grad_q = torch.empty(n, length, d_qk, dtype=q.dtype, device=q.device)
    grad_kv = torch.zeros(kv_map.shape, dtype=torch.float32, device=q.device)
    grad_rel_h = torch.empty(n, length, window, dtype=rel_h.dtype, device=q.device)
    grad_rel_w = torch.empty(n, length, window, dtype=rel_w.dtype, device=q.device)
    grid = (n, triton.cdiv(length, cfg["BLOCK_M"]))
    _halo_bwd_kernel[grid](
        q, kv_map, rel_h, rel_w, grad_out, lse, delta, grad_q, grad_kv, grad_rel_h, grad_rel_w,
        *q.stride(), *kv_map.stride(), *grad_kv.stride(), *rel_h.stride(), *rel_w.stride(), *grad_out.stride(),
        length, nh, nw, block, window, d_qk, d_v, float(scale),
        F32_OPERANDS=_f32_operands(q), **cfg,
    )  # fmt: skip
    return grad_q, grad_kv.to(kv_map.dtype), grad_rel_h, grad_rel_w


@_halo_backward_op.register_fake
def _(grad_out, q, kv_map, rel_h, rel_w, out, lse, block, d_qk, scale):
    n, length, window = rel_h.shape
    return (
        q.new_empty(n, length, q.shape[-1]),
        kv_map.new_empty(kv_map.shape),
        rel_h.new_empty(n, length, window),
        rel_w.new_empty(n, length, window),
    )


def _setup_context(ctx, inputs, output) -> None:
    q, kv_map, rel_h, rel_w, block, d_qk, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, kv_map, rel_h, rel_w, out, lse)
    ctx.args = (block, d_qk, scale)


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):
    q, kv_map, rel_h, rel_w, out, lse = ctx.saved_tensors
    grads = _halo_backward_op(grad_out, q, kv_map, rel_h, rel_w, out, lse, *ctx.args)
    return *grads, None, None, None


_halo_forward_op.register_autograd(_backward, setup_context=_setup_context)


def halo_attention(
    q: Tensor, kv_map: Tensor, rel_h: Tensor, rel_w: Tensor, block: int, d_qk: int, scale: float
) -> Tensor:
    """softmax(scale * q k^T + rel_h (+) rel_w) v over every query block's window, keys read in place.

    Args:
        q: (n, L, d_qk) queries, n = G * nh * nw blocks in (g, block row, block column) order, L queries per block.
        kv_map: (G, Hp, Wp, d_qk + d_v) padded key/value map, keys in the first d_qk channels; block (bi, bj) reads
            the window rows bi * block ... bi * block + w - 1 (likewise columns), so Hp = (nh - 1) * block + w.
        rel_h, rel_w: (n, L, w) logits added per key window row / column (may hold -inf: those keys are dropped).
        block: step b between windows (the query block side at full resolution).
        d_qk: query/key width; d_v is the rest of the map's channels.
        scale: factor of q.k.

    Returns (n, L, d_v) in q's dtype. Differentiable in q, kv_map, rel_h and rel_w (the map's gradient is summed by
    fp32 atomics, nondeterministic in its last bits on a GPU). Every query row needs at least one finite logit.
    """
    _grid_sizes(q, kv_map, rel_h, block, d_qk)
    if rel_w.shape != rel_h.shape:
        raise ValueError(f"halo_attention: rel_w {tuple(rel_w.shape)} != rel_h {tuple(rel_h.shape)}")
    return _halo_forward_op(q, kv_map, rel_h, rel_w, int(block), int(d_qk), float(scale))[0]
