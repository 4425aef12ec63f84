"""Fused aggregated attention (TransNeXt): a pixel's k x k neighbourhood and a pooled map under one softmax.

Per query pixel n = (i, j) of an H x W map and head h, with the scaled query q_n (normalised query plus query
embedding, times length scale and temperature: everything is folded in before the kernel), the normalised keys
K, values V of the map, the pooled keys/values Kp, Vp (Np of them), the pooled position bias P (heads, H*W, Np),
the per-offset bias r (heads, k^2) and the unnormalised additive weights w (B, H, W, heads, k^2):

    l_loc[n, z]  = q_n . K[n + o_z] + r[z]         z in the window (row-major offsets o_z), -inf off the map
    l_pool[n, p] = q_n . Kp[p] + P[n, p]
    [a_loc | a_pool] = softmax([l_loc | l_pool])          (one softmax over both key sets)
    out_n = sum_z (a_loc[n, z] + w[n, z]) V[n + o_z] + sum_p a_pool[n, p] Vp[p]

Off-map neighbours contribute to neither sum.

Forward kernel: one program per (batch, head, tile of ``BLOCK_M`` consecutive pixels of the flattened map). The
neighbourhood is visited one window offset at a time: for offset z the program gathers the (BLOCK_M, head_dim)
tile of keys K[n + o_z] (masked off the map and past head_dim, which need not be a power of two), reduces q . k
over the head dimension with elementwise products (k^2 keys per query are too few for a matrix product), and
folds the logits into the online softmax (running maximum m, sum l, rescaled accumulator) together with the value
tile V[n + o_z], which also feeds the w term. Offsets are a loop rather than one (BLOCK_M, k^2, head_dim) gathered
tile: that tile (k^2 padded to 16 lanes for k = 3) took the kernels to 255 registers with spills at BLOCK_M = 16,
the loop keeps only 2-D tiles live. The pooled keys then stream through in tiles of ``BLOCK_N`` with ``tl.dot``,
continuing the same online softmax. The program writes the output (input dtype) and each row's log-sum-exp (fp32).
Nothing of size (pixels x keys) is stored.

Backward kernel: the program that owns a query tile recomputes the probabilities from the saved log-sum-exp. A
first pass over the offsets writes dw_z = dO . V[n + o_z] and forms delta = rowsum(dO * O_attn), O_attn being the
softmax part of the output alone: rowsum(dO * O) - sum_z w_z dw_z. A second pass recomputes p_z and
dS_z = p_z (dw_z - delta), accumulates dq in registers and scatters with fp32 atomic adds: dK += dS_z q and
dV += (p_z + w_z) dO at the neighbour positions, dr[z] += sum over the tile of dS_z. The pooled loop accumulates
dq with ``tl.dot`` and scatters dKp, dVp and dP (summed over the batch). Atomic adds make the summation order,
hence the low bits of those gradients, nondeterministic from run to run.

Accumulation is fp32 for fp16 / bf16 / fp32 inputs; the matrix products take their inputs in the input dtype
(probabilities cast to V's dtype before the P @ V product), fp32 inputs use TF32 only where torch allows it.
Attention dropout is not part of the kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import DTYPES, _common
from ._common import block_dim, dot_precision

__all__ = ["aggregated_attention"]

# Tile sizes and warps picked from ptxas' register report for sm_90 (compiled without a GPU, head_dim 24, k = 3;
# no timing was possible): with 32 x 32 tiles and 8 warps the forward takes 80-128 registers, the backward 146-194,
# for fp32 / fp16 / bf16, without spills (16 bytes of stack in the fp32 forward); 64-row tiles bring the backward
# to 249-255 registers, and 4 warps to 255 with spills.
_NUM_WARPS = 8
_NUM_STAGES = 2
_BLOCK_M = 32  # query pixels per program
_MAX_BLOCK_N = 32  # pooled keys per step


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``tl.dot`` with fp32 accumulation; ``UPCAST`` multiplies exactly in fp32 instead (interpreter, bf16)."""
    if UPCAST:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=PRECISION)
    return c


@triton.jit
def _neighbour(pi, pj, row_ok, H, W, z, WS: tl.constexpr):
    """Row / column of window offset z (row-major) for each query pixel, and whether it is on the map."""
    ni = pi + (z // WS - WS // 2)
    nj = pj + (z % WS - WS // 2)
    return ni, nj, row_ok & (ni >= 0) & (ni < H) & (nj >= 0) & (nj < W)


@triton.jit
def _aggregated_fwd_kernel(
    Q, K, V, KP, VP, PB, R, WA, O, LSE,
    sq_b, sq_i, sq_j, sq_h, sq_d,
    sk_b, sk_i, sk_j, sk_h, sk_d,
    sv_b, sv_i, sv_j, sv_h, sv_d,
    skp_b, skp_h, skp_p, skp_d,
    svp_b, svp_h, svp_p, svp_d,
    spb_h, spb_n, spb_p,
    sr_h, sr_z,
    swa_b, swa_i, swa_j, swa_h, swa_z,
    H, W, NP,
    HEADS: tl.constexpr, HD: tl.constexpr, WS: tl.constexpr,
    BLOCK_M: tl.constexpr, HDP: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HEADS).to(tl.int64)
    h = pid_bh % HEADS
    n_pix = H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < n_pix
    pi = offs_m // W
    pj = offs_m % W
    offs_d = tl.arange(0, HDP)
    d_ok = offs_d < HD
    row2 = row_ok[:, None] & d_ok[None, :]

    q = tl.load(
        Q + b * sq_b + h * sq_h + (pi * sq_i + pj * sq_j)[:, None] + offs_d[None, :] * sq_d, mask=row2, other=0.0
    )
    qf = q.to(tl.float32)
    k_base = K + b * sk_b + h * sk_h + offs_d[None, :] * sk_d
    v_base = V + b * sv_b + h * sv_h + offs_d[None, :] * sv_d
    wa_base = WA + b * swa_b + h * swa_h + pi * swa_i + pj * swa_j

    # Neighbourhood, one window offset at a time (a (BLOCK_M, head_dim) tile each), online softmax from the start.
    # The finite initial maximum keeps rows past the map (no valid neighbour) free of inf - inf.
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HDP], tl.float32)  # softmax part, unnormalised
    extra = tl.zeros([BLOCK_M, HDP], tl.float32)  # sum_z w_z V_z
    for z in range(WS * WS):
        ni, nj, ok = _neighbour(pi, pj, row_ok, H, W, z, WS)
        ok2 = ok[:, None] & d_ok[None, :]
        k_z = tl.load(k_base + (ni * sk_i + nj * sk_j)[:, None], mask=ok2, other=0.0).to(tl.float32)
        s_z = tl.sum(qf * k_z, axis=1) + tl.load(R + h * sr_h + z * sr_z).to(tl.float32)
        s_z = tl.where(ok, s_z, float("-inf"))
        m_new = tl.maximum(m_i, s_z)
        alpha = tl.exp(m_i - m_new)
        p_z = tl.exp(s_z - m_new)
        l_i = l_i * alpha + p_z
        v_z = tl.load(v_base + (ni * sv_i + nj * sv_j)[:, None], mask=ok2, other=0.0).to(tl.float32)
        w_z = tl.load(wa_base + z * swa_z, mask=ok, other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + p_z[:, None] * v_z
        extra += w_z[:, None] * v_z
        m_i = m_new

    # Pooled keys in tiles of BLOCK_N.
    kp_base = KP + b * skp_b + h * skp_h
    vp_base = VP + b * svp_b + h * svp_h
    pb_base = PB + h * spb_h + offs_m.to(tl.int64)[:, None] * spb_n  # (heads, N, Np) may pass 2^31
    for start in range(0, NP, BLOCK_N):
        offs_p = start + tl.arange(0, BLOCK_N)
        p_ok = offs_p < NP
        kp_t = tl.load(
            kp_base + offs_p[None, :] * skp_p + offs_d[:, None] * skp_d, mask=d_ok[:, None] & p_ok[None, :], other=0.0
        )
        s = _dot(q, kp_t, PRECISION, UPCAST)
        pb = tl.load(pb_base + offs_p[None, :] * spb_p, mask=row_ok[:, None] & p_ok[None, :], other=0.0)
        s = tl.where(p_ok[None, :], s + pb.to(tl.float32), float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vp = tl.load(
            vp_base + offs_p[:, None] * svp_p + offs_d[None, :] * svp_d, mask=p_ok[:, None] & d_ok[None, :], other=0.0
        )
        acc = acc * alpha[:, None] + _dot(p.to(vp.dtype), vp, PRECISION, UPCAST)
        m_i = m_new

    l_i = tl.where(row_ok, l_i, 1.0)
    out = acc / l_i[:, None] + extra
    own = ((b * n_pix + offs_m) * HEADS + h)[:, None] * HD + offs_d[None, :]  # contiguous (B, H, W, heads, HD)
    tl.store(O + own, out.to(O.dtype.element_ty), mask=row2)
    tl.store(LSE + (b * HEADS + h) * n_pix + offs_m, m_i + tl.log(l_i), mask=row_ok)


@triton.jit
def _aggregated_bwd_kernel(
    Q, K, V, KP, VP, PB, R, WA, O, LSE, DO,
    DQ, DK, DV, DKP, DVP, DPB, DR, DWA,
    sq_b, sq_i, sq_j, sq_h, sq_d,
    sk_b, sk_i, sk_j, sk_h, sk_d,
    sv_b, sv_i, sv_j, sv_h, sv_d,
    skp_b, skp_h, skp_p, skp_d,
    svp_b, svp_h, svp_p, svp_d,
    spb_h, spb_n, spb_p,
    sr_h, sr_z,
    swa_b, swa_i, swa_j, swa_h, swa_z,
    sdo_b, sdo_i, sdo_j, sdo_h, sdo_d,
    H, W, NP,
    HEADS: tl.constexpr, HD: tl.constexpr, WS: tl.constexpr,
    BLOCK_M: tl.constexpr, HDP: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HEADS).to(tl.int64)
    h = pid_bh % HEADS
    n_pix = H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < n_pix
    pi = offs_m // W
    pj = offs_m % W
    offs_d = tl.arange(0, HDP)
    d_ok = offs_d < HD
    row2 = row_ok[:, None] & d_ok[None, :]

    q = tl.load(
        Q + b * sq_b + h * sq_h + (pi * sq_i + pj * sq_j)[:, None] + offs_d[None, :] * sq_d, mask=row2, other=0.0
    )
    qf = q.to(tl.float32)
    do_ptrs = DO + b * sdo_b + h * sdo_h + (pi * sdo_i + pj * sdo_j)[:, None] + offs_d[None, :] * sdo_d
    do = tl.load(do_ptrs, mask=row2, other=0.0)
    dof = do.to(tl.float32)
    own = ((b * n_pix + offs_m) * HEADS + h)[:, None] * HD + offs_d[None, :]  # contiguous (B, H, W, heads, HD)
    o = tl.load(O + own, mask=row2, other=0.0).to(tl.float32)
    lse = tl.load(LSE + (b * HEADS + h) * n_pix + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * sk_b + h * sk_h + offs_d[None, :] * sk_d
    v_base = V + b * sv_b + h * sv_h + offs_d[None, :] * sv_d
    wa_base = WA + b * swa_b + h * swa_h + pi * swa_i + pj * swa_j
    dwa_base = DWA + ((b * n_pix + offs_m) * HEADS + h) * (WS * WS)  # contiguous (B, H, W, heads, WS^2)
    nb_base = (b * n_pix * HEADS + h) * HD + offs_d[None, :]  # fp32 dK / dV buffers, contiguous like O

    # Pass 1: dL/dw_z = dO . V_z (stored), and delta = rowsum(dO * O_attn) with O_attn = O - sum_z w_z V_z.
    w_dp = tl.zeros([BLOCK_M], tl.float32)
    for z in range(WS * WS):
        ni, nj, ok = _neighbour(pi, pj, row_ok, H, W, z, WS)
        v_z = tl.load(v_base + (ni * sv_i + nj * sv_j)[:, None], mask=ok[:, None] & d_ok[None, :], other=0.0)
        dp_z = tl.sum(dof * v_z.to(tl.float32), axis=1)  # zero off the map
        tl.store(dwa_base + z, dp_z, mask=row_ok)
        w_dp += tl.load(wa_base + z * swa_z, mask=ok, other=0.0).to(tl.float32) * dp_z
    delta = tl.sum(dof * o, axis=1) - w_dp

    # Pass 2: neighbourhood gradients.
    dq = tl.zeros([BLOCK_M, HDP], tl.float32)
    for z in range(WS * WS):
        ni, nj, ok = _neighbour(pi, pj, row_ok, H, W, z, WS)
        ok2 = ok[:, None] & d_ok[None, :]
        k_z = tl.load(k_base + (ni * sk_i + nj * sk_j)[:, None], mask=ok2, other=0.0).to(tl.float32)
        v_z = tl.load(v_base + (ni * sv_i + nj * sv_j)[:, None], mask=ok2, other=0.0).to(tl.float32)
        w_z = tl.load(wa_base + z * swa_z, mask=ok, other=0.0).to(tl.float32)
        s_z = tl.sum(qf * k_z, axis=1) + tl.load(R + h * sr_h + z * sr_z).to(tl.float32)
        p_z = tl.where(ok, tl.exp(s_z - lse), 0.0)
        ds_z = p_z * (tl.sum(dof * v_z, axis=1) - delta)
        dq += ds_z[:, None] * k_z
        nb = nb_base + ((ni * W + nj) * HEADS * HD)[:, None]
        tl.atomic_add(DK + nb, ds_z[:, None] * qf, mask=ok2)
        tl.atomic_add(DV + nb, (p_z + w_z)[:, None] * dof, mask=ok2)
        tl.atomic_add(DR + h * (WS * WS) + z, tl.sum(ds_z, axis=0))

    # Pooled keys.
    kp_base = KP + b * skp_b + h * skp_h
    vp_base = VP + b * svp_b + h * svp_h
    pb_base = PB + h * spb_h + offs_m.to(tl.int64)[:, None] * spb_n  # (heads, N, Np) may pass 2^31
    dpool_base = (b * HEADS + h) * NP * HD
    dpb_base = DPB + (h * n_pix + offs_m.to(tl.int64))[:, None] * NP
    for start in range(0, NP, BLOCK_N):
        offs_p = start + tl.arange(0, BLOCK_N)
        p_ok = offs_p < NP
        pd_mask = d_ok[:, None] & p_ok[None, :]
        kp_t = tl.load(kp_base + offs_p[None, :] * skp_p + offs_d[:, None] * skp_d, mask=pd_mask, other=0.0)
        vp_t = tl.load(vp_base + offs_p[None, :] * svp_p + offs_d[:, None] * svp_d, mask=pd_mask, other=0.0)
        mp_mask = row_ok[:, None] & p_ok[None, :]
        pb = tl.load(pb_base + offs_p[None, :] * spb_p, mask=mp_mask, other=0.0).to(tl.float32)
        s = _dot(q, kp_t, PRECISION, UPCAST) + pb
        p = tl.where(mp_mask, tl.exp(s - lse[:, None]), 0.0)
        dp = _dot(do, vp_t, PRECISION, UPCAST)
        ds = p * (dp - delta[:, None])
        ds_in = ds.to(q.dtype)
        dq += _dot(ds_in, tl.trans(kp_t), PRECISION, UPCAST)
        pool_off = dpool_base + offs_p[:, None] * HD + offs_d[None, :]
        dpool_mask = p_ok[:, None] & d_ok[None, :]
        tl.atomic_add(DKP + pool_off, _dot(tl.trans(ds_in), q, PRECISION, UPCAST), mask=dpool_mask)
        tl.atomic_add(DVP + pool_off, _dot(tl.trans(p.to(do.dtype)), do, PRECISION, UPCAST), mask=dpool_mask)
        tl.atomic_add(dpb_base + offs_p[None, :], ds, mask=mp_mask)

    tl.store(DQ + own, dq, mask=row2)


def _strides(t: Tensor, n: int) -> tuple[int, ...]:
    assert t.ndim == n
    return tuple(t.stride())


def _config(
    heads: int, head_dim: int, window_size: int, num_pooled: int, dtype: torch.dtype, device: torch.device
) -> dict:
    return dict(
        HEADS=heads,
        HD=head_dim,
        WS=window_size,
        BLOCK_M=_BLOCK_M,
        HDP=block_dim(head_dim),
        BLOCK_N=block_dim(min(num_pooled, _MAX_BLOCK_N)),
        PRECISION=dot_precision(dtype),
        # Triton's CPU interpreter multiplies bf16 tiles wrongly in tl.dot (checked with Triton 3.9): there the
        # operands go to fp32 first, which is exact for bf16 products and keeps fp32 accumulation as on a GPU.
        UPCAST=_common.widen_bf16_dots(dtype, device),
    )


# Custom operators (``torch.library``): torch.compile and torch.export keep them in the graph as single nodes
# (backbones::aggregated_attention / aggregated_attention_backward); the fake implementations give the output shapes
# for any symbolic size, the Triton launches run only on real tensors.


@torch.library.custom_op("backbones::aggregated_attention", mutates_args=())
def _aggregated_forward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    pos_bias: Tensor,
    rel_local: Tensor,
    w_add: Tensor,
    window_size: int,
) -> tuple[Tensor, Tensor]:
    """(out, fp32 log-sum-exp per (batch, head, pixel)) of the fused aggregated attention."""
    b, height, width, heads, hd = q.shape
    num_pooled = k_pool.shape[2]
    cfg = _config(heads, hd, window_size, num_pooled, q.dtype, q.device)
    out = torch.empty(b, height, width, heads, hd, device=q.device, dtype=q.dtype)
    lse = torch.empty(b, heads, height * width, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(height * width, cfg["BLOCK_M"]), b * heads)
    _aggregated_fwd_kernel[grid](
        q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add, out, lse,
        *_strides(q, 5), *_strides(k, 5), *_strides(v, 5), *_strides(k_pool, 4), *_strides(v_pool, 4),
        *_strides(pos_bias, 3), *_strides(rel_local, 2), *_strides(w_add, 5),
        height, width, num_pooled,
        **cfg, num_warps=_NUM_WARPS, num_stages=_NUM_STAGES,
    )  # fmt: skip
    return out, lse


@_aggregated_forward_op.register_fake
def _(q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add, window_size):
    b, height, width, heads, _ = q.shape
    return q.new_empty(q.shape), q.new_empty(b, heads, height * width, dtype=torch.float32)


@torch.library.custom_op("backbones::aggregated_attention_backward", mutates_args=())
def _aggregated_backward_op(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    pos_bias: Tensor,
    rel_local: Tensor,
    w_add: Tensor,
    out: Tensor,
    lse: Tensor,
    window_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of q, k, v, k_pool, v_pool, pos_bias, rel_local and w_add, each in its input's dtype."""
    b, height, width, heads, hd = q.shape
    num_pooled = k_pool.shape[2]
    ws = window_size
    grad_out = grad_out.to(out.dtype)
    cfg = _config(heads, hd, ws, num_pooled, q.dtype, q.device)
    f32 = dict(device=q.device, dtype=torch.float32)
    dq = torch.empty(q.shape, **f32)
    dk = torch.zeros(q.shape, **f32)
    dv = torch.zeros(q.shape, **f32)
    dkp = torch.zeros(b, heads, num_pooled, hd, **f32)
    dvp = torch.zeros(b, heads, num_pooled, hd, **f32)
    dpb = torch.zeros(heads, height * width, num_pooled, **f32)
    dr = torch.zeros(heads, ws * ws, **f32)
    dwa = torch.empty(b, height, width, heads, ws * ws, **f32)
    grid = (triton.cdiv(height * width, cfg["BLOCK_M"]), b * heads)
    _aggregated_bwd_kernel[grid](
        q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add, out, lse, grad_out,
        dq, dk, dv, dkp, dvp, dpb, dr, dwa,
        *_strides(q, 5), *_strides(k, 5), *_strides(v, 5), *_strides(k_pool, 4), *_strides(v_pool, 4),
        *_strides(pos_bias, 3), *_strides(rel_local, 2), *_strides(w_add, 5), *_strides(grad_out, 5),
        height, width, num_pooled,
        **cfg, num_warps=_NUM_WARPS, num_stages=_NUM_STAGES,
    )  # fmt: skip
    return (
        dq.to(q.dtype),
        dk.to(k.dtype),
        dv.to(v.dtype),
        dkp.to(k_pool.dtype),
        dvp.to(v_pool.dtype),
        dpb.to(pos_bias.dtype),
        dr.to(rel_local.dtype),
        dwa.to(w_add.dtype),
    )


@_aggregated_backward_op.register_fake
def _(grad_out, q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add, out, lse, window_size):
    return tuple(t.new_empty(t.shape) for t in (q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add))


def _setup_context(ctx, inputs, output) -> None:
    *tensors, window_size = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(*tensors, out, lse)
    ctx.window_size = window_size


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):
    grads = _aggregated_backward_op(grad_out, *ctx.saved_tensors, ctx.window_size)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None)


_aggregated_forward_op.register_autograd(_backward, setup_context=_setup_context)


def aggregated_attention(
    q_scaled: Tensor,
    k: Tensor,
    v: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    pos_bias: Tensor,
    rel_local: Tensor,
    w_add: Tensor,
    window_size: int,
) -> Tensor:
    """Neighbourhood + pooled attention under one softmax, fused (see the module docstring for the math).

    Args:
        q_scaled: (B, H, W, heads, d) queries with every scale folded in.
        k, v: (B, H, W, heads, d) keys (normalised) and values of the map.
        k_pool, v_pool: (B, heads, Np, d) pooled keys (normalised) and values.
        pos_bias: (heads, H * W, Np) bias of the pooled logits.
        rel_local: (heads, window_size^2) bias of the neighbourhood logits, row-major offsets.
        w_add: (B, H, W, heads, window_size^2) weights added to the neighbourhood probabilities (unnormalised).
        window_size: odd side of the neighbourhood.

    Returns (B, H, W, heads, d) in q_scaled's dtype; k, v, k_pool, v_pool are cast to it (differentiably). Every
    tensor argument receives a gradient. CUDA tensors, or CPU tensors under Triton's interpreter.
    """
    if q_scaled.ndim != 5:
        raise ValueError(f"aggregated_attention: q_scaled must be (B, H, W, heads, d), got {tuple(q_scaled.shape)}")
    b, height, width, heads, hd = q_scaled.shape
    if window_size < 1 or window_size % 2 != 1:
        raise ValueError(f"aggregated_attention: window_size must be a positive odd int, got {window_size}")
    dtype = q_scaled.dtype
    if dtype not in DTYPES:
        raise TypeError(f"aggregated_attention: dtype {dtype} not supported (float32, float16, bfloat16)")
    if k.shape != q_scaled.shape or v.shape != q_scaled.shape:
        raise ValueError(f"aggregated_attention: k, v must be {tuple(q_scaled.shape)}, got {k.shape}, {v.shape}")
    if k_pool.ndim != 4 or k_pool.shape[:2] != (b, heads) or k_pool.shape[3] != hd or v_pool.shape != k_pool.shape:
        raise ValueError(f"aggregated_attention: bad pooled shapes {tuple(k_pool.shape)}, {tuple(v_pool.shape)}")
    num_pooled = k_pool.shape[2]
    if num_pooled < 1:
        raise ValueError("aggregated_attention: at least one pooled key is needed")
    if pos_bias.shape != (heads, height * width, num_pooled):
        raise ValueError(f"aggregated_attention: pos_bias must be {(heads, height * width, num_pooled)}")
    if rel_local.shape != (heads, window_size**2):
        raise ValueError(f"aggregated_attention: rel_local must be {(heads, window_size**2)}")
    if w_add.shape != (b, height, width, heads, window_size**2):
        raise ValueError(f"aggregated_attention: w_add must be {(b, height, width, heads, window_size**2)}")
    k, v, k_pool, v_pool = (t.to(dtype) for t in (k, v, k_pool, v_pool))
    out, _ = _aggregated_forward_op(q_scaled, k, v, k_pool, v_pool, pos_bias, rel_local, w_add, int(window_size))
    return out
