"""MoH-ViT: TransNeXt with Mixture-of-Head attention (Jin et al. 2024, arXiv:2410.11842, SkyworkAI/MoH).

The TransNeXt-S / -B pyramid (:class:`backbones.models.transnext.TransNeXt`) whose every attention (aggregated
attention in stages 1-3, full length-scaled attention in stage 4) re-weights its head outputs per token before the
output projection (:class:`backbones.blocks.head_mixture.HeadMixture`): S shared heads always on, and each token
activating its top k of the other h - S heads, with the gate math of the official code. Released variants (the
suffix is the share of heads a token activates), per stage (shared S, routed top-k) of (h heads):

| name | heads | (S, k) stage 1 | stage 2 | stage 3 | stage 4 |
|---|---|---|---|---|---|
| moh_transnext_small_75 | 3, 6, 12, 24 | (3, 0) | (6, 0) | (3, 6) | (4, 12) |
| moh_transnext_small_80 | 3, 6, 12, 24 | (3, 0) | (6, 0) | (3, 6) | (8, 12) |
| moh_transnext_base_50 | 4, 8, 16, 32 | (2, 2) | (2, 4) | (2, 6) | (4, 8) |
| moh_transnext_base_75 | 4, 8, 16, 32 | (4, 0) | (8, 0) | (4, 8) | (5, 16) |

A (S, 0) stage keeps every head but weights them by a softmax router. Training adds the load-balancing loss of the
routed layers: ``model.moh_aux_loss()`` (mean over the routed attentions of the latest training forward) times
``model.moh_aux_loss_weight`` (0.01, official); tools/train.py does it for any model that has the method.

Everything else (any input size, position-bias modes, features, checkpoint layout) is TransNeXt's; official
checkpoints map as TransNeXt's plus ``attn.wg`` / ``attn.wg_0`` / ``attn.wg_1`` -> ``attn.moh.wg*``.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs
from torch import Tensor

from .._bench import register_reference
from .._registry import register_model
from . import transnext
from .transnext import TransNeXt

__all__ = [
    "checkpoint_filter_fn",
    "moh_transnext_small_75",
    "moh_transnext_small_80",
    "moh_transnext_base_50",
    "moh_transnext_base_75",
]

_SMALL = dict(embed_dims=(72, 144, 288, 576), depths=(5, 5, 22, 5), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dims=(96, 192, 384, 768), depths=(5, 5, 23, 5), num_heads=(4, 8, 16, 32))
# (architecture, shared heads per stage, routed top-k per stage), official MoH-ViT/transnext.py.
MOH_ARCHS: dict[str, tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]] = {
    "moh_transnext_small_75": (_SMALL, (3, 6, 3, 4), (0, 0, 6, 12)),
    "moh_transnext_small_80": (_SMALL, (3, 6, 3, 8), (0, 0, 6, 12)),
    "moh_transnext_base_50": (_BASE, (2, 2, 2, 4), (2, 4, 6, 8)),
    "moh_transnext_base_75": (_BASE, (4, 8, 4, 5), (0, 0, 8, 16)),
}


def moh_stages(shared_heads: tuple[int, ...], routed_heads: tuple[int, ...]) -> tuple[dict[str, int], ...]:
    """The per-stage ``moh`` argument of :class:`TransNeXt` from the official ``shared_head`` / ``routed_head``."""
    return tuple(dict(shared_heads=s, routed_heads=k) for s, k in zip(shared_heads, routed_heads))


def checkpoint_filter_fn(state_dict: dict[str, Any], model: TransNeXt) -> dict[str, Tensor]:
    """Official MoH-ViT weights -> ``model``: TransNeXt's mapping, which includes the routers ``attn.wg*`` ->
    ``attn.moh.wg*`` (the same function: ``backbones.load_checkpoint`` picks the filter of the model's class)."""
    return transnext.checkpoint_filter_fn(state_dict, model)


def _create_moh_transnext(variant: str, pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    return transnext._create_transnext(variant, pretrained, **kwargs)  # same class, same checkpoint filter


def _hf(repo: str, filename: str, **kwargs: Any) -> dict[str, Any]:
    """Official weights on the Hugging Face hub: DeiT-style training checkpoints (``model`` plus optimizer state and
    an ``argparse.Namespace``), unwrapped to ``model`` by the checkpoint filter. File names as listed in the hub
    repositories (S-80, B-50, B-75 seen; S-75 follows the same ``moh_transnext_<variant>.pth`` pattern)."""
    return transnext._cfg(
        url=f"https://huggingface.co/Chat-UniVi/{repo}/resolve/main/{filename}",
        hf_hub_id=f"Chat-UniVi/{repo}",
        hf_hub_filename=filename,
        license="apache-2.0",
        paper_ids="arXiv:2410.11842",
        paper_name="MoH: Multi-Head Attention as Mixture-of-Head Attention",
        origin_url="https://github.com/SkyworkAI/MoH",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "moh_transnext_small_75.in1k": _hf("MoH-ViT-S-75", "moh_transnext_small_75.pth"),
        "moh_transnext_small_80.in1k": _hf("MoH-ViT-S-80", "moh_transnext_small_80.pth"),
        "moh_transnext_base_50.in1k": _hf("MoH-ViT-B-50", "moh_transnext_base_50.pth"),
        "moh_transnext_base_75.in1k": _hf("MoH-ViT-B-75", "moh_transnext_base_75.pth"),
    }
)


def _model_args(name: str) -> dict[str, Any]:
    arch, shared, routed = MOH_ARCHS[name]
    return dict(arch, moh=moh_stages(shared, routed))


@register_model
def moh_transnext_small_75(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = _model_args("moh_transnext_small_75")
    return _create_moh_transnext("moh_transnext_small_75", pretrained, **dict(model_args, **kwargs))


@register_model
def moh_transnext_small_80(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = _model_args("moh_transnext_small_80")
    return _create_moh_transnext("moh_transnext_small_80", pretrained, **dict(model_args, **kwargs))


@register_model
def moh_transnext_base_50(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = _model_args("moh_transnext_base_50")
    return _create_moh_transnext("moh_transnext_base_50", pretrained, **dict(model_args, **kwargs))


@register_model
def moh_transnext_base_75(pretrained: bool = False, **kwargs: Any) -> TransNeXt:
    model_args = _model_args("moh_transnext_base_75")
    return _create_moh_transnext("moh_transnext_base_75", pretrained, **dict(model_args, **kwargs))


def _official_reference(name: str, **kwargs: Any):
    from ._transnext_reference import create_official_style

    return create_official_style(name, **kwargs)


# tools/benchmark.py --compare: the official native MoH formulation (unfold windows, one-hot top-k, einsum gates).
register_reference("moh_transnext_*", _official_reference, "official-unfold")
