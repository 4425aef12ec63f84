"""The official BiFormer formulation, re-written (clean room) as a speed and numerics reference.

This follows the computation order of rayleizhu/BiFormer's legacy bi-level routing attention and its blocks, on
the parameters of this repository's modules, so that ``tools/benchmark.py --compare`` can time the official
formulation against ours with the same weights, and the tests can check that both give the same numbers:

- the trunk is NCHW; every block permutes to NHWC and back (official ``Block``);
- BRA pads the normalised input before the projection, partitions it into regions, projects, takes region
  means, routes with ``torch.topk``, gathers the routed k/v through an index expanded to the gathered size,
  rearranges the gathered tensor into heads and runs an explicit matmul -> softmax -> matmul;
- the stage-4 attention is an explicit matmul -> softmax -> matmul as well.

Nothing here is used by the models themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks.bilevel_routing_attention import BiLevelRoutingAttention

__all__ = ["official_bra", "official_global_attention", "OfficialStyleBiFormer", "create_official_style"]


def official_bra(attn: BiLevelRoutingAttention, x: Tensor) -> Tensor:
    """The official legacy BRA on ``attn``'s weights; x (B, H, W, C) -> (B, H, W, C). Identity k/v only."""
    if attn.kv_downsample_mode != "identity":
        raise NotImplementedError("the reference covers kv_downsample_mode='identity' (all released models)")
    n, h_in, w_in, c = x.shape
    s, m, qk = attn.num_regions, attn.num_heads, attn.qk_dim
    pad_r, pad_b = (s - w_in % s) % s, (s - h_in % s) % s
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, hp, wp, _ = x.shape
    rh, rw = hp // s, wp // s
    # (n, S*rh, S*rw, c) -> (n, S^2, rh, rw, c), a copy as einops.rearrange makes it
    x = x.reshape(n, s, rh, s, rw, c).permute(0, 1, 3, 2, 4, 5).reshape(n, s * s, rh, rw, c)
    q, kv = attn.qkv(x).split([qk, qk + attn.dim], dim=-1)
    q_pix = q.reshape(n, s * s, rh * rw, qk)
    kv_pix = kv.reshape(n, s * s, rh * rw, qk + attn.dim)
    q_win, k_win = q.mean([2, 3]), kv[..., :qk].mean([2, 3])  # (n, S^2, qk)

    lepe = 0
    if attn.lepe is not None:
        v_map = kv[..., qk:].reshape(n, s, s, rh, rw, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, hp, wp)
        lepe = attn.lepe(v_map.contiguous()).permute(0, 2, 3, 1)  # (n, hp, wp, c) as a strided view

    q_win, k_win = q_win.detach(), k_win.detach()
    logits = (q_win * attn.scale) @ k_win.transpose(-2, -1)  # (n, S^2, S^2)
    _, r_idx = torch.topk(logits, k=attn.topk, dim=-1)  # (n, S^2, topk)

    p2, w2, ckv = s * s, rh * rw, qk + attn.dim
    kv_sel = torch.gather(
        kv_pix.view(n, 1, p2, w2, ckv).expand(-1, p2, -1, -1, -1),
        dim=2,
        index=r_idx.view(n, p2, attn.topk, 1, 1).expand(-1, -1, -1, w2, ckv),
    )  # (n, S^2, topk, w2, ckv): topk copies
    k_sel, v_sel = kv_sel.split([qk, attn.dim], dim=-1)
    k_sel = k_sel.reshape(n * p2, attn.topk, w2, m, qk // m).permute(0, 3, 4, 1, 2).reshape(n * p2, m, qk // m, -1)
    v_sel = v_sel.reshape(n * p2, attn.topk, w2, m, c // m).permute(0, 3, 1, 2, 4).reshape(n * p2, m, -1, c // m)
    q_pix = q_pix.reshape(n * p2, w2, m, qk // m).permute(0, 2, 1, 3)

    weight = torch.softmax((q_pix * attn.scale) @ k_sel, dim=-1)  # (n*S^2, m, w2, topk*w2)
    out = weight @ v_sel  # (n*S^2, m, w2, c/m)
    out = out.reshape(n, s, s, m, rh, rw, c // m).permute(0, 1, 4, 2, 5, 3, 6).reshape(n, hp, wp, c)
    out = attn.proj(out + lepe)
    if pad_r or pad_b:
        out = out[:, :h_in, :w_in, :].contiguous()
    return out


def official_global_attention(attn: nn.Module, x: Tensor) -> Tensor:
    """The official stage-4 attention with LePE on x (explicit softmax); x (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    heads = attn.num_heads
    q, k, v = attn.qkv(tokens).reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    lepe = attn.lepe(x.permute(0, 3, 1, 2).contiguous()).flatten(2).transpose(1, 2)
    weight = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    out = (weight @ v).transpose(1, 2).reshape(b, h * w, c) + lepe
    return attn.proj(out).reshape(b, h, w, c)


class OfficialStyleBiFormer(nn.Module):
    """Runs a ``backbones`` BiFormer with the official formulation (same parameters, NCHW trunk)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def _block(self, block: nn.Module, x: Tensor) -> Tensor:
        x = x + block.pos_embed(x)
        x = x.permute(0, 2, 3, 1)  # NCHW -> NHWC, as the official block does for every block
        attn = block.attn
        if isinstance(attn, BiLevelRoutingAttention):
            y = official_bra(attn, block.norm1(x))
        else:
            y = official_global_attention(attn, block.norm1(x))
        x = x + block.drop_path1(y)
        x = x + block.drop_path2(block.mlp(block.norm2(x)))
        return x.permute(0, 3, 1, 2)

    def forward_features(self, x: Tensor) -> Tensor:
        model = self.model
        x = model.stem(x)
        for stage in model.stages:
            x = stage.downsample(x)
            for block in stage.blocks:
                x = self._block(block, x)
        return model.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        return self.model.head.fc(x.flatten(2).mean(-1))


def create_official_style(model_name: str, **kwargs) -> OfficialStyleBiFormer:
    """Build ``model_name`` from this repository and wrap it to run the official formulation."""
    import timm

    return OfficialStyleBiFormer(timm.create_model(model_name, **kwargs))
