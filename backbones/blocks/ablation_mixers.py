"""Ablation mixers: dot-product attention with one of its principles relaxed ("which parts of attention matter").

Dot-product attention y_n = sum_m softmax_m(q_n . k_m / sqrt(d)) v_m (per head, q = x W_q, k = x W_k, v = x W_v)
bundles four principles: mixing across positions, input-dependent weights, the dot-product + softmax form, and q / k
computed from the block's current hidden state. Each module here drops one and keeps everything else (per-head value
and output projections, (B, H, W, C) channels-last maps of any size); ``identity`` (no mixing at all) is
``nn.Identity`` in the registry. With d = C / h channels per head and N = H * W tokens:

    StaticMixer (input-independent):  y_n = sum_{z in W(n)} a_h[z] v_{n+z}
        a_h = softmax over the offsets z of the k x k window that stay inside the map, of learned per-head logits
        w_h[z] (``mode="learned"``; a function of the relative position only, never of x), or a_h uniform
        (``mode="pool"``: average pooling of v over the window's real pixels). Cost N k^2 C + 2 N C^2.
    SigmoidAttention (another form):  y_n = sum_m sigmoid(q_n . k_m / sqrt(d) + b) v_m
        elementwise sigmoid instead of the row softmax, b = -ln N by default (Ramapuram et al., "Theory, Analysis,
        and Best Practices for Sigmoid Self-Attention", arXiv:2409.04431). Cost 2 N^2 C + 4 N C^2.
    LinearAttention (kernelised):     y_n = phi(q_n)^T S / (phi(q_n) . z + eps),  S = sum_m phi(k_m) v_m^T,
        z = sum_m phi(k_m), phi(t) = elu(t) + 1 > 0 (Katharopoulos et al., "Transformers are RNNs",
        arXiv:2006.16236). Cost 2 N d C + 4 N C^2: linear in N.
    DecoupledAttention (q, k not from the current state): q, k = LN(s) W_q, LN(s) W_k from the map s the *stage*
        started from (``stage_input``), v = x W_v from the block's own input x; y = softmax(q k^T / sqrt(d)) v.
        The weights depend on the input image, but not on what the earlier blocks of the stage computed.
        Cost 2 N^2 C + 4 N C^2.

Every output goes through a C x C projection ``proj``. ``DecoupledAttention.uses_stage_input`` is True: a stage
calls it as ``mixer(x, stage_input=s)`` (``backbones.models.hybrid`` does); without ``stage_input`` it falls back to
x, i.e. plain attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import Tensor, nn

from ._checks import check_shape
from ._precision import autocast_off

__all__ = ["StaticMixer", "SigmoidAttention", "LinearAttention", "DecoupledAttention", "STATIC_MODES"]

STATIC_MODES = ("learned", "pool")


def _check(x: Tensor, dim: int, name: str) -> Tensor:
    """``x``; a ``ValueError`` naming ``name`` and the expected shape when it is not (B, H, W, dim)."""
    return check_shape(x, 4, dim, -1, name + ": expected x of shape (B, H, W, " + str(dim) + ") (channels-last)")


def _heads(dim: int, num_heads: int, name: str) -> int:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"{name}: dim ({dim}) must be divisible by num_heads ({num_heads})")
    return dim // num_heads


def _linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float) -> Tensor:
    acc = torch.promote_types(q.dtype, torch.float32)  # at least fp32 (float64 stays float64)
    q, k, v = F.elu(q.to(acc)) + 1, F.elu(k.to(acc)) + 1, v.to(acc)
    state = k.transpose(-2, -1) @ v  # (B, heads, d, d): sum_m phi(k_m) v_m^T
    norm = q @ k.sum(2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1): phi(q_n) . sum_m phi(k_m)
    return (q @ state) / (norm + eps)


@register_notrace_function  # reason: the autocast state of a Proxy's device is not traceable
def linear_attention_fp32(q: Tensor, k: Tensor, v: Tensor, eps: float) -> Tensor:
    """phi(q_n)^T S / (phi(q_n) . z + eps) (module docstring), (B, heads, N, d) each, in float32 at least and with
    autocast off: S and z are sums over all N tokens."""
    if torch.jit.is_scripting():  # TorchScript does not autocast
        return _linear_attention(q, k, v, eps)
    else:
        with autocast_off(q.device.type):
            return _linear_attention(q, k, v, eps)


@register_notrace_function  # reason: a shape comparison is control flow on Proxies
def check_stage_input(stage_input: Tensor, x: Tensor) -> Tensor:
    """``stage_input``; a ``ValueError`` when its shape is not that of ``x``."""
    if stage_input.shape != x.shape:
        if torch.jit.is_scripting():
            expected = "DecoupledAttention: stage_input must have the shape of x " + str(x.shape)
            raise ValueError(expected + ", got " + str(stage_input.shape))
        else:
            raise ValueError(
                f"DecoupledAttention: stage_input must have the shape of x {tuple(x.shape)} (the map the stage "
                f"started from), got {tuple(stage_input.shape)}"
            )
    return stage_input


class StaticMixer(nn.Module):
    """Input-independent mixing over a k x k window (see the module docstring).

    Args:
        dim: channels C.
        num_heads: heads sharing one set of position weights each.
        window_size: odd window side k.
        mode: "learned" (softmax of learned per-head position logits) or "pool" (uniform weights).
        qkv_bias: bias of the value projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        window_size: int = 7,
        mode: str = "learned",
        qkv_bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.head_dim = _heads(dim, num_heads, "StaticMixer")
        if window_size < 1 or window_size % 2 != 1:
            raise ValueError(f"StaticMixer: window_size must be a positive odd int (centred), got {window_size}")
        if mode not in STATIC_MODES:
            raise ValueError(f"StaticMixer: mode must be one of {STATIC_MODES}, got {mode!r}")
        self.dim, self.num_heads, self.window_size, self.mode = dim, num_heads, window_size, mode
        self.v = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        if mode == "learned":
            self.position_logits = nn.Parameter(torch.empty(num_heads, window_size, window_size, **dd))
            nn.init.trunc_normal_(self.position_logits, std=0.02)
        else:
            self.register_parameter("position_logits", None)

    def position_weights(self) -> Tensor:
        """(heads, k, k) unnormalised weights exp(w - max w) (ones in "pool" mode)."""
        if self.position_logits is None:
            return torch.ones(self.num_heads, self.window_size, self.window_size, device=self.v.weight.device,
                              dtype=self.v.weight.dtype)
        logits = self.position_logits
        return (logits - logits.amax(dim=(1, 2), keepdim=True)).exp()

    def forward(self, x: Tensor) -> Tensor:
        x = _check(x, self.dim, "StaticMixer")
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        k, heads = self.window_size, self.num_heads
        e = self.position_weights().to(x.dtype)  # (heads, k, k)
        v = self.v(x).permute(0, 3, 1, 2)  # NCHW view, channels_last memory
        # numerator: every channel of head i convolved with e_i; denominator: e_i summed over the in-map offsets
        num = F.conv2d(v, e.repeat_interleave(self.head_dim, 0)[:, None], padding=k // 2, groups=c)
        ones = torch.ones(1, heads, h, w, device=x.device, dtype=x.dtype)
        den = F.conv2d(ones, e[:, None], padding=k // 2, groups=heads)  # (1, heads, H, W)
        out = num / den.repeat_interleave(self.head_dim, 1)
        return self.proj(out.permute(0, 2, 3, 1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, mode={self.mode!r}"


class _QKVAttention(nn.Module):
    """Fused qkv and output projections shared by the global ablation forms."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, name: str, dd: dict):
        super().__init__()
        self.head_dim = _heads(dim, num_heads, name)
        self.dim, self.num_heads = dim, num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n = x.shape[0], x.shape[1] * x.shape[2]
        # (B, N, 3, heads, d) -> 3 x (B, heads, N, d)
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _merge(self, out: Tensor, shape: list[int]) -> Tensor:
        return self.proj(out.transpose(1, 2).reshape(shape))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class SigmoidAttention(_QKVAttention):
    """Dot-product attention with an elementwise sigmoid in place of the softmax, over all tokens.

    Args:
        dim, num_heads, qkv_bias: as global attention.
        bias: the logit offset b; None means -ln N at the input's N (the paper's choice).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, bias: float | None = None,
                 device=None, dtype=None):
        super().__init__(dim, num_heads, qkv_bias, "SigmoidAttention", dict(device=device, dtype=dtype))
        self.bias = bias

    def forward(self, x: Tensor) -> Tensor:
        x = _check(x, self.dim, "SigmoidAttention")
        q, k, v = self._split(x)
        n = q.shape[2]
        bias = -math.log(n) if self.bias is None else self.bias
        weights = torch.sigmoid((q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + bias)  # (B, heads, N, N)
        return self._merge(weights @ v, x.shape)


class LinearAttention(_QKVAttention):
    """Kernelised linear attention with the elu + 1 feature map, over all tokens (cost linear in N).

    Args:
        dim, num_heads, qkv_bias: as global attention.
        eps: added to the normaliser.

    The key/value sums run in float32 at least (a sum over all N tokens), also under autocast.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, eps: float = 1e-6,
                 device=None, dtype=None):
        super().__init__(dim, num_heads, qkv_bias, "LinearAttention", dict(device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = _check(x, self.dim, "LinearAttention")
        q, k, v = self._split(x)
        return self._merge(linear_attention_fp32(q, k, v, self.eps).to(x.dtype), x.shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class DecoupledAttention(nn.Module):
    """Softmax attention whose queries and keys come from the stage input, the values from the block's input.

    Args:
        dim: channels C.
        num_heads: heads.
        qkv_bias: bias of the q/k and v projections.

    ``forward(x, stage_input=None)``: both (B, H, W, C); ``stage_input`` is normalised here (``context_norm``).
    """

    uses_stage_input = True

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.head_dim = _heads(dim, num_heads, "DecoupledAttention")
        self.dim, self.num_heads = dim, num_heads
        self.context_norm = nn.LayerNorm(dim, **dd)
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.v = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: Tensor, stage_input: Tensor | None = None) -> Tensor:
        x = _check(x, self.dim, "DecoupledAttention")
        stage_input = x if stage_input is None else check_stage_input(stage_input, x)
        b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        heads, d = self.num_heads, self.head_dim
        q, k = self.qk(self.context_norm(stage_input)).view(b, h * w, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        v = self.v(x).view(b, h * w, heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
