"""Rank-augmented linear attention (RALA) and its softmax twin (RAVLT, Fan et al., CVPR 2025, arXiv:2411.07635).

Both mixers share one layout: a fused projection [q | k | v | o] = x W + b (4C outputs, each head-major), a 2-D
rotary position embedding R on q and k, a depthwise k x k conv of v (LePE) and a gate o:

    y = proj((attention(q, k, v) + DWConv(v)) * o)

``RankAugmentedLinearAttention`` (the RAVLT stages 1-2) replaces softmax by the kernel phi(t) = elu(t) + 1 and
lifts the rank of the linear attention twice: its key-value buffer weights every key by how much the *mean query*
attends to it, and the output is gated element-wise by o. Per head (d channels, N = H * W tokens, s = d^-1/2):

    q_n, k_m = phi(q_n), phi(k_m)
    a = softmax_m(s * mean_n(q_n) . k_m)                         token weights, sum_m a_m = 1
    z_n = 1 / (q_n . sum_m a_m k_m + eps)                         normaliser, computed *without* the rotation
    y_n = z_n * R(q_n) (sum_m a_m R(k_m)^T v_m)                   a d x d buffer: O(N d^2) per head

``RoPEGatedAttention`` (stages 3-4) is softmax(s R(q) R(k)^T) v with the same projections, LePE and gate.

R rotates channel pairs (2i, 2i+1): the first d/2 channels by the row index times the frequencies theta, the last
d/2 by the column index. theta_j = 10000^(-j / (d/4 - 1)), j < d/4, each used by two pairs (the official spacing:
the exponents run from 0 to 1 inclusive). Sines and cosines are built from (H, W) at every call, so any size works
with no padding; d must be a multiple of 4.

Shapes: input and output (B, H, W, C) channels-last. State-dict keys ``qkvo`` / ``lepe`` / ``proj`` as the official
``GateLinearAttentionNoSilu`` / ``VanillaSelfAttention``, with Linear instead of 1x1-conv weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import Tensor, nn

from ._checks import check_shape

__all__ = ["RankAugmentedLinearAttention", "RoPEGatedAttention", "RoPETables", "rope_2d", "apply_rope"]


@register_notrace_function  # reason: the tables are built from the map's size (FX: a leaf call on the traced sizes)
def rope_2d(
    height: int, width: int, head_dim: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """(sin, cos), each (H * W, head_dim), of the row / column rotation described in the module docstring.

    ``sin`` carries the sign of the rotation: -sin(angle) on the first channel of each pair, +sin(angle) on the
    second, so that :func:`apply_rope` is two products with the pair-swapped input.
    """
    if head_dim % 4:
        if torch.jit.is_scripting():
            raise ValueError("rope_2d: head_dim must be a multiple of 4, got " + str(head_dim))
        raise ValueError(f"rope_2d: head_dim must be a multiple of 4 (two rotated pairs per frequency), got {head_dim}")
    out_dtype = torch.float32 if dtype is None else dtype
    work = torch.float64 if out_dtype == torch.float64 else torch.float32  # tables in fp32 at least (bf16 runs)
    # frequencies rounded to fp32 whatever the dtype: the official buffer is made in fp32 and cast with the model
    exponents = torch.linspace(0, 1, head_dim // 4, device=device, dtype=torch.float32)
    theta = (1.0 / torch.pow(10000.0, exponents)).to(work)
    theta = theta.repeat_interleave(2)  # one frequency per channel of a pair: (d / 2,)
    rows = torch.arange(height, device=device, dtype=work)[:, None] * theta  # (H, d / 2)
    cols = torch.arange(width, device=device, dtype=work)[:, None] * theta  # (W, d / 2)
    angles = torch.cat(
        (rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)), dim=-1
    ).reshape(height * width, head_dim)
    sign = torch.tensor([-1.0, 1.0], device=device, dtype=work).repeat(head_dim // 2)
    return (angles.sin() * sign).to(out_dtype), angles.cos().to(out_dtype)


class RoPETables(nn.Module):
    """The :func:`rope_2d` tables of a (B, H, W, C) map's H x W grid for heads of ``head_dim`` channels, in the
    map's dtype; no parameters. A stage of several blocks builds them once and hands them to every block."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.head_dim = head_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return rope_2d(x.shape[1], x.shape[2], self.head_dim, x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}"


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate each channel pair (x_2i, x_2i+1) of ``x`` (..., N, d) by the tables of :func:`rope_2d` (N, d):
    (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin)."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x_2i+1, x_2i) pairs
    return torch.addcmul(x * cos, swapped, sin)


class _GatedRoPEMixer(nn.Module):
    """The projections, LePE and gate the two RAVLT mixers share; subclasses define :meth:`_attend`."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        lepe_kernel_size: int = 5,
        qkv_bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        name = type(self).__name__
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"{name}: dim ({dim}) must be divisible by num_heads ({num_heads})")
        if (dim // num_heads) % 4:
            raise ValueError(
                f"{name}: the head width dim / num_heads = {dim // num_heads} must be a multiple of 4 for the 2-D "
                f"rotary embedding (dim={dim}, num_heads={num_heads})"
            )
        if lepe_kernel_size < 1 or lepe_kernel_size % 2 != 1:
            raise ValueError(f"{name}: lepe_kernel_size must be a positive odd int, got {lepe_kernel_size}")
        dd = dict(device=device, dtype=dtype)
        self._name = name  # for messages (TorchScript has no type(self).__name__)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkvo = nn.Linear(dim, 4 * dim, bias=qkv_bias, **dd)
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel_size, padding=lepe_kernel_size // 2, groups=dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def _split_heads(self, t: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, heads, N, d)."""
        return t.reshape(t.shape[0], t.shape[1] * t.shape[2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, H, W, C) -> (B, H, W, C); ``rope``: the :func:`rope_2d` tables of (H, W) if already built (a stage
        of several blocks builds them once)."""
        x = check_shape(x, 4, self.dim, -1, f"{self._name}: expected x of shape (B, H, W, {self.dim}) (channels-last)")
        b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        q, k, v, gate = self.qkvo(x).chunk(4, dim=-1)
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # NCHW view of channels-last v
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if rope is None:
            rope = rope_2d(h, w, self.head_dim, device=x.device, dtype=q.dtype)
        sin, cos = rope[0].to(q.dtype), rope[1].to(q.dtype)  # no-ops unless the tables came from outside autocast
        out = self._attend(q, k, v, sin, cos).transpose(1, 2).reshape(b, h, w, c)
        return self.proj((out + lepe) * gate)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class RankAugmentedLinearAttention(_GatedRoPEMixer):
    """RALA: elu + 1 linear attention with query-weighted keys, RoPE, LePE and an output gate (module docstring).

    Args:
        dim: channels C.
        num_heads: heads h (C / h must be a multiple of 4).
        lepe_kernel_size: odd side of the depthwise conv on v (5 in RAVLT).
        qkv_bias: bias of the fused q | k | v | o projection.
        eps: added to the normaliser's denominator (1e-6 in RAVLT).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        lepe_kernel_size: int = 5,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, num_heads, lepe_kernel_size, qkv_bias, device=device, dtype=dtype)
        self.eps = eps

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        weights = torch.softmax(self.scale * q.mean(dim=2, keepdim=True) @ k.transpose(-2, -1), dim=-1)  # (B,h,1,N)
        k = k * weights.transpose(-2, -1)  # a_m k_m; the official k * a * N and buffer / N cancel
        z = 1.0 / (q @ k.sum(dim=2, keepdim=True).transpose(-2, -1) + self.eps)  # (B, h, N, 1)
        kv = apply_rope(k, sin, cos).transpose(-2, -1) @ v  # (B, h, d, d)
        return (apply_rope(q, sin, cos) @ kv) * z


class RoPEGatedAttention(_GatedRoPEMixer):
    """Softmax attention with RoPE on q and k, LePE and an output gate: RAVLT's stages 3-4 (module docstring).

    Args:
        dim: channels C.
        num_heads: heads h (C / h must be a multiple of 4).
        lepe_kernel_size: odd side of the depthwise conv on v (5 in RAVLT).
        qkv_bias: bias of the fused q | k | v | o projection.
        attn_drop: dropout on the attention weights (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        lepe_kernel_size: int = 5,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__(dim, num_heads, lepe_kernel_size, qkv_bias, device=device, dtype=dtype)
        self.attn_drop = attn_drop

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
