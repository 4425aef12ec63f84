"""Blocked local self-attention with a halo (HaloNet, Vaswani et al., CVPR 2021, arXiv:2103.12731).

The map is cut into non-overlapping query blocks of b x b pixels. Every query of a block attends to the keys and
values of the w x w window (w = b + 2h) made of that block and a halo of h pixels around it, with logits

    a(q, k) = s * q.k + q.R_h[w - 1 + k_r - q_r] + q.R_w[w - 1 + k_c - q_c],          s = d_qk ** -0.5

where (q_r, q_c) is the query's position inside its block, (k_r, k_c) the key's position inside the window and
R_h, R_w are (2w - 1, d_qk) tables of factorised relative positions (indexed as timm indexes them: a key at the
query's own pixel uses row w - 1 + h, not the table centre). ``scale_pos_embed`` scales the relative term by s too.
Query/key width (d_qk per head) and value width (d_v = dim_out / heads) are independent: the paper's value
multiplier r_v is ``dim_out = r_v * d`` with ``dim_head = d / heads``.

Stride 2: for an even b the queries are the top-left pixel of every 2x2 cell (a strided 1x1 projection; blocks of
b/2 x b/2 queries against full-resolution windows, relative rows indexed with the downsampled query position, as
timm does); for an odd b (or ``avg_down``) attention runs at full resolution and a 2x2 average pool follows.

Any H and W: the projections are zero-padded to a multiple of b (and by h around the border), the output is
cropped back to ceil(H / stride) x ceil(W / stride). ``mask_padding=False`` lets every padded key take part in the
softmax as a zero key/value (timm's numerics at the border halo, needed for timm's weights); ``mask_padding=True``
removes padded keys from the softmax.

Layout: input (B, dim, H, W) -> output (B, dim_out, ceil(H / stride), ceil(W / stride)). The key/value projection's
output channels are grouped per head, [k_0 | v_0 | k_1 | v_1 | ...] (timm's layout, kept for its weights).
Keys/values are gathered once into (B * heads * blocks, w * w, d_qk + d_v) windows by an index gather (no unfold:
its backward is slow). Inference runs ``scaled_dot_product_attention`` with the relative logits as its additive
mask; training runs a forward (flash attention on CPU) that keeps only its inputs and log-sum-exp, and a backward
that recomputes each block's attention matrix (:class:`_HaloSoftmaxAttention`): no (b^2, w^2) matrix per block is
held between the passes.

On CUDA (when Triton imports, for fp32 / fp16 / bf16 and head widths up to 256) both passes run the fused Triton
kernel of :mod:`backbones.kernels.halo_attention` instead, which reads every window straight from the padded map
(no gather) and never forms the attention matrix; ``BACKBONES_KERNELS=torch|triton`` forces a path (see
:mod:`backbones.kernels`), and the ``last_kernel`` attribute records which one the last forward used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import make_divisible, register_notrace_module, trunc_normal_
from torch import Tensor, nn

from ..kernels import select
from ._windows import avg_pool_ceil

__all__ = ["HaloAttention"]

# what the Triton kernel takes (checked here: the kernel module imports Triton and loads only when it runs)
_KERNEL_MAX_HEAD_DIM = 256


class _RelPosTables(nn.Module):
    """The two factorised relative-position tables (state-dict names ``height_rel`` / ``width_rel``)."""

    def __init__(self, window_size: int, dim_head: int, device=None, dtype=None):
        super().__init__()
        self.height_rel = nn.Parameter(torch.zeros(2 * window_size - 1, dim_head, device=device, dtype=dtype))
        self.width_rel = nn.Parameter(torch.zeros(2 * window_size - 1, dim_head, device=device, dtype=dtype))


def _expand_rel(rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """(n, L, w) row and (n, L, w) column logits -> (n, L, w * w) logits over the window in raster order."""
    n, length, win = rel_h.shape
    return (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).view(n, length, win * win)


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """softmax(scale * q k^T + bias) v by ``scaled_dot_product_attention`` (fused kernels need equal head sizes:
    the narrower of q/k and v is zero-padded, which changes nothing)."""
    d_qk, d_v = q.shape[-1], v.shape[-1]
    if d_qk < d_v:
        q, k = F.pad(q, (0, d_v - d_qk)), F.pad(k, (0, d_v - d_qk))
    elif d_v < d_qk:
        v = F.pad(v, (0, d_qk - d_v))
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=bias[:, None], scale=scale)
    return out[:, 0, :, :d_v]


def _halo_kernel(*args: Any) -> Tensor:
    """:func:`backbones.kernels.halo_attention.halo_attention`, imported on first use (that module imports Triton);
    a function of its own because TorchScript refuses import statements anywhere in a scripted method."""
    from ..kernels.halo_attention import halo_attention

    return halo_attention(*args)


class _HaloSoftmaxAttention(torch.autograd.Function):
    """softmax(scale * q k^T + rel_h (+) rel_w) v that saves its inputs and the log-sum-exp only.

    The (L, w * w) attention matrix of every block is recomputed in backward instead of being kept for it: it is
    most of the memory an autograd version holds (timm's included). q: (n, L, d_qk), k: (n, S, d_qk),
    v: (n, S, d_v), rel_h / rel_w: (n, L, w) logits per key row / column, S = w * w.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor, rel_w: Tensor, scale: float) -> Tensor:
        bias = _expand_rel(rel_h, rel_w)
        # the fused CPU kernel reads rows with unit stride (q is a strided view when the map is a single block)
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        if q.device.type == "cpu" and q.shape[-1] == v.shape[-1]:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q[:, None], k[:, None], v[:, None], attn_mask=bias[:, None], scale=scale
            )
            out, lse = out[:, 0], lse[:, 0]
        else:
            logits = bias.baddbmm_(q, k.transpose(1, 2), alpha=scale)
            lse = torch.logsumexp(logits, dim=-1)
            out = torch.bmm(logits.sub_(lse.unsqueeze(-1)).exp_(), v)
        ctx.save_for_backward(q, k, v, rel_h, rel_w, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, rel_h, rel_w, out, lse = ctx.saved_tensors
        scale = ctx.scale
        grad_out = grad_out.contiguous()
        attn = _expand_rel(rel_h, rel_w).baddbmm_(q, k.transpose(1, 2), alpha=scale)
        attn = attn.sub_(lse.unsqueeze(-1).to(attn.dtype)).exp_()
        # gradients of k and v as (d, S) products: far faster on CPU than (S, L) @ (L, d) with tiny d
        grad_v = torch.bmm(grad_out.transpose(1, 2), attn).transpose(1, 2)
        # d logits = P * (dP - rowsum(dO * O)), built in place in the buffers of P and dP
        grad_attn = torch.bmm(grad_out, v.transpose(1, 2))
        grad_logits = attn.mul_(grad_attn.sub_((grad_out * out).sum(-1, keepdim=True)))
        n, length, win = rel_h.shape
        per_key = grad_logits.view(n, length, win, win)
        grad_q = torch.bmm(grad_logits, k).mul_(scale)
        grad_k = torch.bmm(q.transpose(1, 2), grad_logits).mul_(scale).transpose(1, 2)
        return grad_q, grad_k, grad_v, per_key.sum(-1), per_key.sum(-2), None


@register_notrace_module  # reason: the kernel choice and the memory-light autograd function are not FX-traceable
class HaloAttention(nn.Module):
    """Halo attention: b x b query blocks against (b + 2h)^2 key/value windows, any input size.

    Args:
        dim: input channels.
        dim_out: output (= value) channels, ``dim`` if not given; must be divisible by ``num_heads``.
        stride: 1, or 2 to halve the output resolution.
        num_heads: attention heads.
        dim_head: query/key channels per head; if not given ``make_divisible(dim_out * qk_ratio, 8) // num_heads``.
        block_size: query block side b.
        halo_size: halo h around each block for the keys/values.
        qk_ratio: query/key width relative to ``dim_out`` when ``dim_head`` is not given.
        qkv_bias: bias in the query and key/value projections.
        avg_down: with stride 2, attend at full resolution and average-pool instead of striding the queries.
        scale_pos_embed: scale the relative-position logits by d_qk ** -0.5 as well.
        mask_padding: exclude padded keys (border halo and the padding to a multiple of b) from the softmax.

    Attributes:
        last_kernel: "torch" or "triton", the attention path of the last forward (None before the first).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        num_heads: int = 8,
        dim_head: int | None = None,
        block_size: int = 8,
        halo_size: int = 3,
        qk_ratio: float = 1.0,
        qkv_bias: bool = False,
        avg_down: bool = False,
        scale_pos_embed: bool = False,
        mask_padding: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        dim_out = dim_out or dim
        if dim_out % num_heads:
            raise ValueError(f"HaloAttention: dim_out={dim_out} must be divisible by num_heads={num_heads}")
        if stride not in (1, 2):
            raise ValueError(f"HaloAttention: stride must be 1 or 2, got {stride}")
        if block_size < 1 or halo_size < 0:
            raise ValueError(f"HaloAttention: need block_size >= 1 and halo_size >= 0, got {block_size}, {halo_size}")
        self.num_heads = num_heads
        self.dim_head_qk = dim_head or make_divisible(dim_out * qk_ratio, divisor=8) // num_heads
        self.dim_head_v = dim_out // num_heads
        self.scale = self.dim_head_qk**-0.5
        self.scale_pos_embed = scale_pos_embed
        self.mask_padding = mask_padding
        self.block_size = block_size
        self.halo_size = halo_size
        self.window_size = block_size + 2 * halo_size
        self.avg_pool = stride == 2 and (avg_down or block_size % 2 == 1)
        self.query_stride = 2 if stride == 2 and not self.avg_pool else 1
        self.query_block = block_size // self.query_stride

        self.q = nn.Conv2d(dim, num_heads * self.dim_head_qk, 1, stride=self.query_stride, bias=qkv_bias, **dd)
        self.kv = nn.Conv2d(dim, num_heads * (self.dim_head_qk + self.dim_head_v), 1, bias=qkv_bias, **dd)
        self.pos_embed = _RelPosTables(self.window_size, self.dim_head_qk, **dd)
        self.last_kernel: str | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.q.in_channels**-0.5
        trunc_normal_(self.q.weight, std=std)
        trunc_normal_(self.kv.weight, std=std)
        trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        trunc_normal_(self.pos_embed.width_rel, std=self.scale)
        for conv in (self.q, self.kv):
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def _pad_mask(self, num_blocks: int, before: int, after: int, like: Tensor) -> Tensor:
        """(num_blocks, w) additive mask along one axis: -inf where a block's window reads padding."""
        pos = torch.arange(num_blocks, device=like.device)[:, None] * self.block_size
        pos = pos + torch.arange(self.window_size, device=like.device)
        valid = (pos >= before) & (pos < num_blocks * self.block_size + 2 * self.halo_size - after)
        return torch.zeros(valid.shape, dtype=like.dtype, device=like.device).masked_fill_(~valid, float("-inf"))

    def _rel_logits(self, q: Tensor, pad: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
        """Relative-position logits of q (B, heads, nh, nw, bq, bq, d) per key row and per key column, padding mask
        folded in: two (n, bq * bq, w) tensors."""
        B, heads, nh, nw, bq = q.shape[0], q.shape[1], q.shape[2], q.shape[3], q.shape[4]
        win = self.window_size
        # table row read by query row/column i for key row/column j of the window
        index = torch.arange(win, device=q.device)[None, :] - torch.arange(bq, device=q.device)[:, None] + win - 1
        rel_h = torch.einsum("bnhwrcd,rkd->bnhwrck", q, self.pos_embed.height_rel[index])
        rel_w = torch.einsum("bnhwrcd,ckd->bnhwrck", q, self.pos_embed.width_rel[index])
        if self.mask_padding:
            rel_h = rel_h + self._pad_mask(nh, pad[2], pad[3], q)[:, None, None, None, :]
            rel_w = rel_w + self._pad_mask(nw, pad[0], pad[1], q)[:, None, None, :]
        n = B * heads * nh * nw
        return rel_h.reshape(n, bq * bq, win), rel_w.reshape(n, bq * bq, win)

    def _window_index(self, nh: int, nw: int, padded_width: int, device: torch.device) -> Tensor:
        """Flat positions in the padded map of every block's w x w window, (nh, nw, w, w) raster order."""
        rows = torch.arange(nh, device=device)[:, None] * self.block_size + torch.arange(
            self.window_size, device=device
        )
        cols = torch.arange(nw, device=device)[:, None] * self.block_size + torch.arange(
            self.window_size, device=device
        )
        return (rows[:, None, :, None] * padded_width + cols[None, :, None, :]).reshape(-1)

    def _kernel_unsupported(self, q: Tensor, kv: Tensor) -> str | None:
        """Why the Triton kernel cannot run this call, or None."""
        if kv.dtype != q.dtype:  # (dtypes the kernels do not take at all are select()'s own check)
            return f"queries and keys/values of different dtypes ({q.dtype}, {kv.dtype})"
        if max(self.dim_head_qk, self.dim_head_v) > _KERNEL_MAX_HEAD_DIM:
            return f"head widths above {_KERNEL_MAX_HEAD_DIM} (d_qk={self.dim_head_qk}, d_v={self.dim_head_v})"
        return None

    def _gather_windows(self, kv: Tensor, n: int, nh: int, nw: int) -> tuple[Tensor, Tensor]:
        """The PyTorch path's k, v: every block's window of the padded (B, heads, Hp, Wp, d) map, gathered once,
        (n, w * w, d_qk) and (n, w * w, d_v)."""
        b, h, win = self.block_size, self.halo_size, self.window_size
        d_qk, d_v = self.dim_head_qk, self.dim_head_v
        kv = kv.reshape(kv.shape[0] * self.num_heads, -1, d_qk + d_v)
        kv = kv.index_select(1, self._window_index(nh, nw, nw * b + 2 * h, kv.device))
        kv = kv.view(n, win * win, d_qk + d_v)
        return kv[..., :d_qk], kv[..., d_qk:]

    def forward(self, x: Tensor) -> Tensor:
        B, H, W = x.shape[0], x.shape[2], x.shape[3]
        b, h, bq, heads = self.block_size, self.halo_size, self.query_block, self.num_heads
        d_qk, d_v = self.dim_head_qk, self.dim_head_v
        nh, nw = math.ceil(H / b), math.ceil(W / b)
        n = B * heads * nh * nw

        q = self.q(x)
        q = F.pad(q, (0, nw * bq - q.shape[-1], 0, nh * bq - q.shape[-2]))
        # (B, heads, d, nh, bq, nw, bq) -> (B, heads, nh, nw, bq, bq, d)
        q = q.view(B, heads, d_qk, nh, bq, nw, bq).permute(0, 1, 3, 5, 4, 6, 2)
        if self.scale_pos_embed:
            q = q * self.scale
        pad = (h, h + nw * b - W, h, h + nh * b - H)  # one zero pad: the halo and the padding to a multiple of b
        rel_h, rel_w = self._rel_logits(q, pad)
        q = q.reshape(n, bq * bq, d_qk)

        # keys/values channels-last (B, heads, H, W, d), zero-padded; the PyTorch path then gathers every window once
        # by index (an index_select, whose backward is an index_add: far cheaper than unfold's), the kernel reads them
        # in place
        kv = self.kv(x).view(B, heads, d_qk + d_v, H, W).permute(0, 1, 3, 4, 2)
        kv = F.pad(kv, (0, 0) + pad)
        scale = 1.0 if self.scale_pos_embed else self.scale
        if torch.jit.is_scripting():  # TorchScript: the PyTorch path with plain autograd
            k, v = self._gather_windows(kv, n, nh, nw)
            out = _fused_attention(q, k, v, _expand_rel(rel_h, rel_w), scale)
        else:
            self.last_kernel = select("HaloAttention", q, kv, unsupported=self._kernel_unsupported(q, kv))
            if self.last_kernel == "triton":
                # windows read in place from the padded (B * heads, Hp, Wp, d_qk + d_v) map, both passes
                out = _halo_kernel(q, kv.reshape(B * heads, *kv.shape[2:]), rel_h, rel_w, b, d_qk, scale)
            else:
                # the memory-light autograd function when gradients are needed; the fused kernel otherwise (and
                # when tracing / exporting, which cannot see through a custom autograd function's private kernel)
                needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, kv, rel_h, rel_w))
                k, v = self._gather_windows(kv, n, nh, nw)
                if needs_grad and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
                    out = _HaloSoftmaxAttention.apply(q, k, v, rel_h, rel_w, scale)
                else:
                    out = _fused_attention(q, k, v, _expand_rel(rel_h, rel_w), scale)
        # (n, bq * bq, d_v) -> (B, heads, d_v, nh, bq, nw, bq) -> (B, dim_out, nh * bq, nw * bq)
        out = out.reshape(B, heads, nh, nw, bq, bq, d_v).permute(0, 1, 6, 2, 4, 3, 5)
        out = out.reshape(B, heads * d_v, nh * bq, nw * bq)
        if self.avg_pool:
            return avg_pool_ceil(out[:, :, :H, :W], 2)
        return out[:, :, : math.ceil(H / self.query_stride), : math.ceil(W / self.query_stride)]
