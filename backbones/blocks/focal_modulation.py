"""Focal modulation (FocalNet, NeurIPS 2022, arXiv:2203.11926).

Self-attention is replaced by modulating each token's query with a gated mix of contexts gathered at
L + 1 granularities. With ``q, z_0, g = split(f(x))`` (C, C and L + 1 channels; ``f`` a 1x1 conv):

    z_l = GELU(DWConv_{k_l}(z_{l-1}))       l = 1..L, k_l = focal_window + focal_factor * (l - 1)
    z_{L+1} = GELU(mean_{H,W}(z_L))         global context, broadcast over H x W
    c = sum_{l=1}^{L+1} g_l * z_l            gates g_l are raw (no softmax); each is one channel, broadcast over C
    c = c / (L + 1)                          only with ``normalize_modulator``
    y = proj(norm(q * h(c)))                 ``h``, ``proj``: 1x1 convs; ``norm`` only with ``use_post_norm``

The levels are sequential (level l convolves level l-1's output), so their receptive fields grow as
1 + sum (k_i - 1). The depthwise convolutions use "same" zero padding and no bias, so a kernel zero-padded to a
larger odd size computes exactly the same function (what detection fine-tuning relies on, see
``backbones.models.focalnet.checkpoint_filter_fn``).

Shapes: input and output (B, C, H, W), any H and W. Works in NCHW or channels-last memory format; the output has
the memory format the 1x1 convolutions give for the input's. Parameters are 1x1 ``nn.Conv2d`` so the state-dict
keys are ``f``, ``h``, ``proj``, ``focal_layers.{l}.0`` and (post-norm) ``norm``, as in timm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

__all__ = ["FocalModulation"]


class FocalModulation(nn.Module):
    """Focal modulation mixer over an NCHW map (see the module docstring for the math).

    Args:
        dim: channels C of input and output.
        focal_levels: number L of depthwise context levels (the global level comes on top).
        focal_window: kernel size of the first level.
        focal_factor: kernel growth per level (k_l = focal_window + focal_factor * l).
        bias: bias in ``f`` and ``h``.
        use_post_norm: LayerNorm on ``q * h(c)`` before ``proj`` (FocalNet-H, official ``use_postln_in_modulation``).
        normalize_modulator: divide the aggregated context by L + 1 before ``h``.
        proj_drop: dropout after ``proj``.
        norm_layer: norm used when ``use_post_norm``.
    """

    def __init__(
        self,
        dim: int,
        focal_levels: int = 2,
        focal_window: int = 3,
        focal_factor: int = 2,
        bias: bool = True,
        use_post_norm: bool = False,
        normalize_modulator: bool = False,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = LayerNorm2d,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if focal_levels < 1:
            raise ValueError(f"focal_levels must be >= 1, got {focal_levels}")
        dd = dict(device=device, dtype=dtype)
        self.dim = dim
        self.focal_levels = focal_levels
        self.focal_window = focal_window
        self.focal_factor = focal_factor
        self.normalize_modulator = normalize_modulator
        self.kernel_sizes = [focal_window + focal_factor * level for level in range(focal_levels)]

        # Registration order = state-dict order of timm and the official code: f, h, proj, focal_layers, norm.
        self.f = nn.Conv2d(dim, 2 * dim + focal_levels + 1, kernel_size=1, bias=bias, **dd)
        self.h = nn.Conv2d(dim, dim, kernel_size=1, bias=bias, **dd)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        # Each level's conv sits in a Sequential only so that its weight is `focal_layers.{l}.0.weight` (timm and
        # official keys; there the Sequential also holds the GELU, which forward applies instead so that inference
        # can run it in place).
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False, **dd))
            for k in self.kernel_sizes
        )
        self.norm = norm_layer(dim, **dd) if use_post_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        levels = self.focal_levels
        # Without autograd, GELU and the modulation overwrite their inputs (fewer large allocations, ~10% on CPU).
        inplace = not torch.is_grad_enabled()
        q, ctx, gates = torch.split(self.f(x), (self.dim, self.dim, levels + 1), dim=1)

        # In-place accumulation is autograd-safe here: no op saves `ctx_all` itself for its backward.
        ctx_all = None
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx = torch.ops.aten.gelu_(ctx) if inplace else F.gelu(ctx)
            gate = gates[:, level : level + 1]  # (B, 1, H, W)
            ctx_all = ctx * gate if ctx_all is None else ctx_all.addcmul_(ctx, gate)
        assert ctx_all is not None  # focal_levels >= 1 (TorchScript: Optional refinement)
        ctx_global = F.gelu(ctx.mean((2, 3), keepdim=True))  # (B, C, 1, 1), from the LAST level
        ctx_all = ctx_all.addcmul_(ctx_global, gates[:, levels:])
        if self.normalize_modulator:
            ctx_all = ctx_all.div_(levels + 1)

        x = self.h(ctx_all).mul_(q) if inplace else q * self.h(ctx_all)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_sizes={self.kernel_sizes}, normalize_modulator={self.normalize_modulator}"
