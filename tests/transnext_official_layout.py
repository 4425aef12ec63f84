"""The official TransNeXt classification checkpoint layout, shared by the TransNeXt and MoH-TransNeXt tests.

Keys and shapes are written out from the module structure of DaiShiResearch/TransNeXt classification/transnext.py
(read there, not produced by this repository's code); the values are random.
"""

from __future__ import annotations

import torch


def official_state_dict(
    embed_dims, depths, num_heads, mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1), window=3, num_classes=1000
) -> dict[str, torch.Tensor]:
    """Keys and shapes of DaiShiResearch/TransNeXt classification/transnext.py, random values."""
    g = torch.Generator().manual_seed(0)
    shapes = {}
    for s, (c, depth, heads, ratio, sr) in enumerate(zip(embed_dims, depths, num_heads, mlp_ratios, sr_ratios), 1):
        c_in, k = (3, 7) if s == 1 else (embed_dims[s - 2], 3)
        shapes.update({f"patch_embed{s}.proj.weight": (c, c_in, k, k), f"patch_embed{s}.proj.bias": (c,)})
        shapes.update({f"patch_embed{s}.norm.weight": (c,), f"patch_embed{s}.norm.bias": (c,)})
        d, hidden = c // heads, int(2 * int(c * ratio) / 3)
        for j in range(depth):
            p = f"block{s}.{j}."
            for n in ("norm1", "norm2"):
                shapes.update({p + n + ".weight": (c,), p + n + ".bias": (c,)})
            a = p + "attn."
            shapes.update({a + "temperature": (heads, 1, 1), a + "query_embedding": (heads, 1, d)})
            if sr > 1:
                shapes.update({a + "relative_pos_bias_local": (heads, window**2)})
                shapes.update(
                    {a + "learnable_tokens": (heads, d, window**2), a + "learnable_bias": (heads, 1, window**2)}
                )
                shapes.update(
                    {a + "q.weight": (c, c), a + "q.bias": (c,), a + "kv.weight": (2 * c, c), a + "kv.bias": (2 * c,)}
                )
                shapes.update(
                    {a + "sr.weight": (c, c, 1, 1), a + "sr.bias": (c,), a + "norm.weight": (c,), a + "norm.bias": (c,)}
                )
            else:
                shapes.update({a + "qkv.weight": (3 * c, c), a + "qkv.bias": (3 * c,)})
            shapes.update({a + "proj.weight": (c, c), a + "proj.bias": (c,)})
            shapes.update({a + "cpb_fc1.weight": (512, 2), a + "cpb_fc1.bias": (512,)})
            shapes.update({a + "cpb_fc2.weight": (heads, 512), a + "cpb_fc2.bias": (heads,)})
            shapes.update({p + "mlp.fc1.weight": (2 * hidden, c), p + "mlp.fc1.bias": (2 * hidden,)})
            shapes.update({p + "mlp.dwconv.dwconv.weight": (hidden, 1, 3, 3), p + "mlp.dwconv.dwconv.bias": (hidden,)})
            shapes.update({p + "mlp.fc2.weight": (c, hidden), p + "mlp.fc2.bias": (c,)})
        shapes.update({f"norm{s}.weight": (c,), f"norm{s}.bias": (c,)})
    if num_classes:
        shapes.update({"head.weight": (num_classes, embed_dims[-1]), "head.bias": (num_classes,)})
    sd = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=g) * 0.05
        if k.endswith(".weight") and t.ndim == 1:  # LayerNorm scales around 1
            t = t + 1.0
        if k.endswith("temperature"):
            t = t + 4.0
        sd[k] = t
    return sd
