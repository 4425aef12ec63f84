"""Bi-level routing attention (BiFormer, CVPR 2023, arXiv:2303.08810).

The map is cut into S x S regions (S = ``num_regions``; every region is h x w = ceil(H/S) x ceil(W/S) tokens, so
the region *count* is fixed and the region *size* follows the input). With q, k, v = split(x W_qkv + b_qkv)
(``qk_dim``, ``qk_dim`` and C channels) and s = ``qk_scale`` or qk_dim^-0.5:

    q_r, k_r = mean of q, k over the tokens of each region         (S^2, qk_dim) region descriptors
    A = (s q_r) k_r^T                                               (S^2, S^2) region-to-region affinity
    I_i = the ``topk`` regions with the largest A[i, :]             ties go to the lower region index
    K_i, V_i = k, v tokens of the regions I_i                       optionally pooled per region first
    O_i = softmax((s Q_i) K_i^T) V_i                                per head, Q_i = the queries of region i
    y = proj(O + DWConv(v))                                         local context enhancement (LCE) on v

The same s (the full ``qk_dim``, not the head width) scales routing and token attention, as the released weights
expect. By default routing has no gradient (q_r, k_r detached). Options of the official variants:
``kv_downsample_mode`` pools the k/v tokens of each region ('avgpool'/'maxpool' with kernel and stride
``kv_downsample_ratio``, 'ada_avgpool'/'ada_maxpool' to ``kv_per_region`` x ``kv_per_region``);
``routing_proj`` adds a learned projection for the region descriptors (official ``param_routing``);
``routing_grad`` lets gradient through the routing (official ``diff_routing``); ``routing_weight`` multiplies the
routed k and v by the softmax of their top-k affinities (official ``soft_routing``); ``proj_out=False`` drops the
output projection (official ``param_attention='qkv'``).

Padding. H and W are zero-padded bottom/right to multiples of S and the output is cropped back.
``mask_padding=True``: padded tokens are left out of the region means, regions holding no real token are routed
last, padded keys are masked out of the softmax and the LCE sees the unpadded map, so padding contributes nothing
(only the region geometry depends on it). ``mask_padding=False``: the official numerics (needed for its weights at
padded sizes) -- the normalised input is padded *before* the projection, so padded tokens carry the qkv bias and
take part in the region means, the LCE and the softmax.

Speed. The official code gathers k/v through an int64 index expanded to the full (B, S^2, topk, h*w, C) output,
copies the gathered tensor twice more into head layout and runs an explicit matmul -> softmax -> matmul that keeps
the attention matrix for backward. Here the map is partitioned once into (B, S^2, h*w, C) before the projection,
so the k|v of one region is one contiguous row: routing is a row lookup whose output, viewed with strides, is the
key/value operand of ``scaled_dot_product_attention`` (fused; no attention matrix kept). The routed k/v are
gathered and attended in chunks of query regions that stay in cache (CPU), and the backward pass re-gathers
each chunk and scatter-adds its k/v gradient instead of keeping topk copies of k/v. Region means of q and k are
the projection of the region mean of x (the projection is affine), and routing runs in fp32 under autocast.

Fused kernel. On CUDA (when Triton imports) the token-to-token attention runs instead in the Triton kernel
:func:`backbones.kernels.routed_attention.routed_attention`, forward and backward, soft routing included: it reads
the routed k/v rows in place, computes the softmax online with fp32 accumulation and keeps only the log-sum-exp for
backward (deterministic dK/dV through the inverse routing). ``BACKBONES_KERNELS=torch|triton`` forces either path
(see :mod:`backbones.kernels`); float64 inputs take PyTorch (an error when Triton is forced). ``last_kernel``
records which one the last forward used ("torch" or "triton").

Shapes: input and output (B, H, W, C), channels-last, any H, W >= 1. State-dict keys: ``qkv`` (fused [q | k | v]),
``lepe``, ``proj`` and, with ``routing_proj``, ``routing_proj``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..kernels import select
from ._checks import check_shape
from ._precision import autocast_off
from ._windows import is_compiling, reshape_copy

__all__ = ["BiLevelRoutingAttention", "KV_DOWNSAMPLE_MODES"]

KV_DOWNSAMPLE_MODES = ("identity", "avgpool", "maxpool", "ada_avgpool", "ada_maxpool")


def _partition(x: Tensor, num_regions: int) -> Tensor:
    """(B, S*h, S*w, C) -> (B, S*S, h*w, C): regions row-major, tokens row-major inside a region."""
    b, hp, wp, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    s = num_regions
    # reshape_copy: traced, reshape's view-or-copy choice would read the strides (a guard on one-token regions)
    x = reshape_copy(x, [b, s, hp // s, s, wp // s, c]).transpose(2, 3)  # (B, S, S, h, w, C)
    return reshape_copy(x, [b, s * s, (hp // s) * (wp // s), c])


def _merge(x: Tensor, num_regions: int, h: int, w: int) -> Tensor:
    """(B, S*S, h*w, C) -> (B, S*h, S*w, C), the inverse of :func:`_partition`."""
    b, c = x.shape[0], x.shape[3]
    s = num_regions
    return reshape_copy(reshape_copy(x, [b, s, s, h, w, c]).transpose(2, 3), [b, s * h, s * w, c])


# Routed k/v are gathered and attended chunk by chunk so that each gathered chunk stays small: on CPU every
# allocation above glibc's mmap threshold (at most 32 MB) comes back as fresh pages, and page-faulting a topk-fold
# copy of k/v costs several times the copy itself. On other devices the caching allocator makes one chunk best.
_CPU_CHUNK_BYTES = 4 * 2**20


def _chunk_size(
    device: torch.device, bytes_per_region: int, num_regions: int, chunk_bytes: int = _CPU_CHUNK_BYTES
) -> int:
    # (the budget is a default argument: TorchScript reads no module-level ints)
    # traced (torch.compile / torch.export): one chunk, so the chunk count is no Python loop over a symbolic size
    if device.type != "cpu" or is_compiling():
        return num_regions
    return max(1, min(num_regions, chunk_bytes // max(1, bytes_per_region)))


def _attend(q: Tensor, kv: Tensor, mask: Tensor | None, heads: int, qk_dim: int, scale: float) -> Tensor:
    """Multi-head attention of q (N, n, qk) over gathered kv (N, K, qk + C) -> (N, n, C)."""
    nb, n = q.shape[0], q.shape[1]
    c = kv.shape[-1] - qk_dim
    out = F.scaled_dot_product_attention(
        q.view(nb, n, heads, -1).transpose(1, 2),  # strided views: no copies into head layout
        kv[..., :qk_dim].unflatten(-1, (heads, -1)).transpose(1, 2),
        kv[..., qk_dim:].unflatten(-1, (heads, -1)).transpose(1, 2),
        attn_mask=mask,
        scale=scale,
    )  # (N, heads, n, C / heads), stored as (N, n, heads, C / heads)
    return out.transpose(1, 2).reshape(nb, n, c)


def _gather(kv_rows: Tensor, rows: Tensor, weight: Tensor | None, width: int) -> Tensor:
    """Routed regions' k/v: kv_rows (N, n_kv * width) one row per region, rows (M, topk) -> (M, topk * n_kv, width).

    A row lookup (``F.embedding``): no index tensor of the output's size, no second copy into head layout.
    """
    kv = F.embedding(rows, kv_rows)  # (M, topk, n_kv * width)
    if weight is not None:  # official soft routing scales the routed k and v alike
        kv = kv * weight.unsqueeze(-1).to(kv.dtype)
    return kv.view(rows.shape[0], -1, width)


def _routed_attention_chunks(
    q: Tensor,
    kv: Tensor,
    rows: Tensor,
    mask: Tensor | None,
    weight: Tensor | None,
    heads: int,
    qk_dim: int,
    scale: float,
) -> Tensor:
    """q (N, n, qk), kv (N, n_kv, qk + C), rows (N, topk) -> (N, n, C), chunk by chunk; plain autograd."""
    nb, n_kv, width = kv.shape[0], kv.shape[1], kv.shape[2]
    kv_rows = kv.reshape(nb, n_kv * width)
    step = _chunk_size(q.device, rows.shape[1] * n_kv * width * kv.element_size(), nb)
    outs = []
    for s in range(0, nb, step):
        e = min(s + step, nb)
        kv_c = _gather(kv_rows, rows[s:e], None if weight is None else weight[s:e], width)
        outs.append(_attend(q[s:e], kv_c, None if mask is None else mask[s:e], heads, qk_dim, scale))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _routed_kernel(*args: Any, **kwargs: Any) -> Tensor:
    """:func:`backbones.kernels.routed_attention.routed_attention`, imported on first use (that module imports
    Triton); a function of its own because TorchScript refuses import statements anywhere in a scripted method."""
    from ..kernels.routed_attention import routed_attention

    return routed_attention(*args, **kwargs)


class _RoutedAttention(torch.autograd.Function):
    """Chunked routed attention that keeps no gathered k/v for backward: the backward pass gathers each chunk
    again, recomputes its attention and scatters the k/v gradient into one buffer (``index_add_``)."""

    @staticmethod
    def forward(ctx, q, kv, rows, mask, heads, qk_dim, scale):
        ctx.save_for_backward(q, kv, rows, mask)
        ctx.args = (heads, qk_dim, scale)
        return _routed_attention_chunks(q, kv, rows, mask, None, heads, qk_dim, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, kv, rows, mask = ctx.saved_tensors
        heads, qk_dim, scale = ctx.args
        nb, n_kv, width = kv.shape
        kv_rows = kv.detach().reshape(nb, n_kv * width)
        grad_q = torch.empty_like(q)
        acc = torch.float32 if kv.dtype in (torch.float16, torch.bfloat16) else kv.dtype
        grad_kv = torch.zeros(nb, n_kv * width, device=kv.device, dtype=acc)
        step = _chunk_size(q.device, rows.shape[1] * n_kv * width * kv.element_size(), nb)
        for s in range(0, nb, step):
            e = min(s + step, nb)
            with torch.enable_grad():
                q_c = q[s:e].detach().requires_grad_()
                kv_c = _gather(kv_rows, rows[s:e], None, width).requires_grad_()
                out = _attend(q_c, kv_c, None if mask is None else mask[s:e], heads, qk_dim, scale)
                dq, dkv = torch.autograd.grad(out, (q_c, kv_c), grad_out[s:e])
            grad_q[s:e] = dq
            grad_kv.index_add_(0, rows[s:e].reshape(-1), dkv.reshape(-1, n_kv * width).to(acc))
        return grad_q, grad_kv.view_as(kv).to(kv.dtype), None, None, None, None, None


@register_notrace_module  # reason: the padding, the masks and the kernel choice depend on the input size
class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention over a channels-last map (see the module docstring for the math).

    Args:
        dim: channels C of input and output (also the width of v).
        num_heads: attention heads; ``qk_dim`` and ``dim`` must be divisible by it.
        num_regions: regions per side S (S*S regions whatever the input size).
        topk: routed regions per region (at most S*S).
        qk_dim: width of q and k (default ``dim``).
        qk_scale: softmax temperature s (default qk_dim^-0.5, also used for routing).
        kv_downsample_mode: one of :data:`KV_DOWNSAMPLE_MODES`, pooling of k/v inside each region.
        kv_per_region: output side of the 'ada_*' poolings.
        kv_downsample_ratio: kernel and stride of 'avgpool'/'maxpool' (1 means no pooling).
        lepe_kernel_size: kernel of the depthwise conv on v (0 disables it).
        qkv_bias: bias in the fused qkv projection.
        proj_out: output projection (``False`` = official ``param_attention='qkv'``).
        routing_proj: learned projection of the region descriptors before routing (needs ``routing_grad``).
        routing_grad: let gradient flow through the region descriptors (needs ``routing_weight`` to reach them).
        routing_weight: scale the routed k and v by the softmax of their routing affinities.
        mask_padding: keep padded tokens out of routing and softmax (``False``: official numerics).

    Attributes:
        last_kernel: "torch" or "triton", the routed-attention path of the last forward (None before the first);
            chosen per call by :func:`backbones.kernels.select` (Triton for CUDA tensors in auto mode).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_regions: int = 7,
        topk: int = 4,
        qk_dim: int | None = None,
        qk_scale: float | None = None,
        kv_downsample_mode: str = "identity",
        kv_per_region: int = 4,
        kv_downsample_ratio: int = 4,
        lepe_kernel_size: int = 5,
        qkv_bias: bool = True,
        proj_out: bool = True,
        routing_proj: bool = False,
        routing_grad: bool = False,
        routing_weight: bool = False,
        mask_padding: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        qk_dim = qk_dim or dim
        if dim % num_heads or qk_dim % num_heads:
            raise ValueError(f"dim ({dim}) and qk_dim ({qk_dim}) must be divisible by num_heads ({num_heads})")
        if num_regions < 1 or not 1 <= topk <= num_regions**2:
            raise ValueError(f"need num_regions >= 1 and 1 <= topk <= num_regions**2, got {num_regions=}, {topk=}")
        if kv_downsample_mode not in KV_DOWNSAMPLE_MODES:
            raise ValueError(f"kv_downsample_mode must be one of {KV_DOWNSAMPLE_MODES}, got {kv_downsample_mode!r}")
        if routing_proj and not routing_grad:
            raise ValueError("routing_proj=True needs routing_grad=True, otherwise the projection never learns")
        if routing_grad and not routing_weight:
            raise ValueError("routing_grad=True needs routing_weight=True: a hard top-k passes no gradient")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.qk_dim = qk_dim
        self.num_heads = num_heads
        self.num_regions = num_regions
        self.topk = topk
        self.scale = qk_scale or qk_dim**-0.5
        self.kv_downsample_mode = kv_downsample_mode
        self.kv_per_region = kv_per_region
        self.kv_downsample_ratio = kv_downsample_ratio
        self.routing_grad = routing_grad
        self.routing_weight = routing_weight
        self.mask_padding = mask_padding
        self.last_kernel: str | None = None  # "torch" or "triton": the routed attention of the last forward

        self.qkv = nn.Linear(dim, 2 * qk_dim + dim, bias=qkv_bias, **dd)
        self.lepe = (
            nn.Conv2d(dim, dim, lepe_kernel_size, padding=lepe_kernel_size // 2, groups=dim, **dd)
            if lepe_kernel_size > 0
            else None
        )
        self.routing_proj = nn.Linear(qk_dim, qk_dim, **dd) if routing_proj else nn.Identity()
        self.proj = nn.Linear(dim, dim, **dd) if proj_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, f"BiLevelRoutingAttention: expected x of shape (B, H, W, {self.dim})")
        b, hgt, wid = x.shape[0], x.shape[1], x.shape[2]
        s, m, qk = self.num_regions, self.num_heads, self.qk_dim
        rh, rw = (hgt + s - 1) // s, (wid + s - 1) // s  # region size, ceil(H / S) x ceil(W / S)
        pad_b, pad_r = rh * s - hgt, rw * s - wid
        # Under torch.compile / export the padded path is always taken (it equals the unpadded one when nothing is
        # padded), so one graph serves every size.
        padded = is_compiling() or pad_b > 0 or pad_r > 0
        if padded:  # zeros before the projection (official): padded q/k/v are the bias, masked or not
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        x = _partition(x, s)  # (B, S^2, n, C), n = rh * rw
        token_valid: Tensor | None = None
        if self.mask_padding and padded:
            token_valid = self._token_valid(hgt, wid, rh, rw, x.device)  # (S^2, n)
        index, weight = self._route(x, token_valid)  # (B, S^2, topk)

        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x, w[:qk], None if bias is None else bias[:qk])  # (B, S^2, n, qk)
        kv = F.linear(x, w[qk:], None if bias is None else bias[qk:])  # (B, S^2, n, qk + C): one row per region
        lepe: Tensor | None = None
        if self.lepe is not None:
            v_map = _merge(kv[..., qk:], s, rh, rw)  # (B, Hp, Wp, C)
            if token_valid is not None:  # the conv's own zero padding at the real border, as without padding
                v_map = v_map[:, :hgt, :wid]
            lepe = self.lepe(v_map.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)[:, :hgt, :wid]

        key_valid = token_valid
        if torch.jit.is_scripting():
            if self.kv_downsample_mode != "identity":
                raise RuntimeError("BiLevelRoutingAttention: TorchScript supports kv_downsample_mode='identity' only")
        elif self.kv_downsample_mode != "identity":
            kv, key_valid = self._downsample_kv(kv, token_valid, rh, rw)
        n_q, n_kv = rh * rw, kv.shape[2]
        rows = (torch.arange(b, device=x.device).view(b, 1, 1) * s * s + index).view(b * s * s, -1)
        q, kv = q.reshape(b * s * s, n_q, qk), kv.reshape(b * s * s, n_kv, -1)
        mask: Tensor | None = None
        if key_valid is not None:  # (B*S^2, 1, 1, topk * n_kv): one row per query region, heads broadcast
            mask = key_valid[index].view(b * s * s, 1, 1, -1)
        wts = None if weight is None else weight.reshape(b * s * s, -1)
        if torch.jit.is_scripting():  # TorchScript: the PyTorch path with plain autograd
            out = _routed_attention_chunks(q, kv, rows, mask, wts, m, qk, self.scale)
        else:
            backend = select("BiLevelRoutingAttention", q, kv)
            self.last_kernel = backend
            if backend == "triton":
                key_mask = None if key_valid is None else key_valid.repeat(b, 1)  # (B*S^2, n_kv), per key region
                out = _routed_kernel(q, kv, rows, key_mask, m, qk, self.scale, weight=wts)  # (B*S^2, n, C)
            elif weight is None and torch.is_grad_enabled() and (q.requires_grad or kv.requires_grad) \
                    and not (torch.jit.is_tracing() or is_compiling()):  # dynamo cannot trace autograd.grad
                out = _RoutedAttention.apply(q, kv, rows, mask, m, qk, self.scale)
            else:
                out = _routed_attention_chunks(q, kv, rows, mask, wts, m, qk, self.scale)  # (B*S^2, n, C)
        out = _merge(out.view(b, s * s, n_q, self.dim), s, rh, rw)[:, :hgt, :wid]
        if lepe is not None:
            out = out + lepe
        return self.proj(out)

    def _token_valid(self, hgt: int, wid: int, rh: int, rw: int, device: torch.device) -> Tensor:
        """(S^2, rh * rw) bool: which token of each region lies inside the unpadded map."""
        s = self.num_regions
        rows = torch.arange(s * rh, device=device) < hgt
        cols = torch.arange(s * rw, device=device) < wid
        valid = rows.view(s, rh, 1, 1) & cols.view(1, 1, s, rw)  # (S, rh, S, rw)
        return reshape_copy(valid.transpose(1, 2), [s * s, rh * rw])

    def _route(self, x: Tensor, token_valid: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Top-k regions per region -> index (B, S^2, topk) and, with ``routing_weight``, their weights.

        The projection is affine, so the region means of q and k are the projections of the region mean of the
        (padded) input x (B, S^2, n, C): one reduction over C channels instead of two over ``qk_dim``.
        """
        x_sum = x.sum(2)  # (B, S^2, C); padded tokens of x are zero
        if token_valid is None:
            x_r = x_sum / x.shape[2]  # official: the padding counts (its q/k are the bias)
        else:
            x_r = x_sum / token_valid.sum(1, keepdim=True).clamp(min=1).to(x.dtype)
        qk = self.qk_dim
        w, bias = self.qkv.weight[: 2 * qk], self.qkv.bias
        if bias is not None:
            bias = bias[: 2 * qk]
        if not self.routing_grad:
            x_r, w = x_r.detach(), w.detach()
            if bias is not None:
                bias = bias.detach()
        if torch.jit.is_scripting():  # TorchScript does not autocast
            return self._route_top(x_r, w, bias, token_valid)
        else:
            with autocast_off(x.device.type):  # a low-precision affinity would tie often and route differently
                return self._route_top(x_r, w, bias, token_valid)

    def _route_top(
        self, x_r: Tensor, w: Tensor, bias: Tensor | None, token_valid: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        qk = self.qk_dim
        dtype = torch.promote_types(x_r.dtype, w.dtype)
        q_r, k_r = F.linear(x_r.to(dtype), w.to(dtype), None if bias is None else bias.to(dtype)).split(qk, -1)
        q_r, k_r = self.routing_proj(q_r), self.routing_proj(k_r)  # (B, S^2, qk) each
        logits = (q_r * self.scale) @ k_r.transpose(-2, -1)  # (B, S^2, S^2)
        if token_valid is not None:
            logits = logits.masked_fill(~token_valid.any(1), float("-inf"))  # regions without a real token last
        # A stable sort makes ties deterministic (lower region index first); torch.topk leaves them unspecified.
        top, index = torch.sort(logits, dim=-1, descending=True, stable=True)
        top, index = top[..., : self.topk], index[..., : self.topk]
        weight = torch.softmax(top, dim=-1) if self.routing_weight else None
        return index, weight

    def _downsample_kv(self, kv: Tensor, token_valid: Tensor | None, rh: int, rw: int) -> tuple[Tensor, Tensor | None]:
        """Pool the k/v tokens inside every region: (B, S^2, rh*rw, ch) -> (B, S^2, n_kv, ch), key validity."""
        mode, ratio = self.kv_downsample_mode, self.kv_downsample_ratio
        if mode in ("avgpool", "maxpool") and ratio <= 1:
            return kv, token_valid
        is_max = mode.endswith("maxpool")
        if mode.startswith("ada_"):
            pool = F.adaptive_max_pool2d if is_max else F.adaptive_avg_pool2d
            size = self.kv_per_region

            def fn(t: Tensor) -> Tensor:
                return pool(t, size)

        else:
            pool = F.max_pool2d if is_max else F.avg_pool2d

            def fn(t: Tensor) -> Tensor:
                return pool(t, ratio, ratio)

        b, r, _, ch = kv.shape
        t = kv.reshape(b * r, rh, rw, ch).permute(0, 3, 1, 2)  # (B*S^2, ch, rh, rw), channels-last memory
        key_valid = None
        if token_valid is None:
            t = fn(t)
        else:
            valid = token_valid.view(1, r, 1, rh, rw).to(kv.dtype)
            pooled_valid = fn(valid.reshape(r, 1, rh, rw))  # avg: share of real tokens; max: any real token
            key_valid = pooled_valid.flatten(1) > 0  # (S^2, n_kv)
            if is_max:  # padding must not win the max; windows without a real token become zero (and masked)
                t = t.reshape(b, r, ch, rh, rw).masked_fill(valid == 0, float("-inf")).view(b * r, ch, rh, rw)
                t = fn(t)
                t = t.masked_fill(
                    ~key_valid.view(1, r, 1, *t.shape[-2:]).expand(b, -1, -1, -1, -1).reshape(b * r, 1, *t.shape[-2:]),
                    0.0,
                )
            else:  # the window average over real tokens: mean(t * valid) / mean(valid)
                t = fn(t * valid.view(1, r, 1, rh, rw).expand(b, -1, -1, -1, -1).reshape(b * r, 1, rh, rw))
                t = t / pooled_valid.clamp(min=1e-12).repeat(b, 1, 1, 1)
        return t.flatten(2).transpose(1, 2).reshape(b, r, -1, ch), key_valid

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, qk_dim={self.qk_dim}, num_heads={self.num_heads}, num_regions={self.num_regions}, "
            f"topk={self.topk}, kv_downsample_mode={self.kv_downsample_mode!r}, mask_padding={self.mask_padding}"
        )
