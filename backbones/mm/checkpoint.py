"""Official detector / segmentor checkpoints in this repository's mmdet / mmseg models, loaded strictly.

mmengine's ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py CONFIG CHECKPOINT``, ``--resume``) reads the
file, calls the hooks' ``after_load_checkpoint`` and then loads it with ``strict=False``, which would silently
skip every backbone key of an official file: the official detection backbones name their tensors as the
classification code does (``backbone.layers.0.blocks.0...``, ``backbone.block1.0...``), while this repository's
adapter holds the timm model under ``backbone.model.*``. :class:`DenseCheckpointLayoutHook` rewrites the
checkpoint in that hook to the model's own names and refuses a partial load:

* ``backbone.*``: through the adapter (:meth:`TimmBackboneAdapter.convert_state_dict`: the family's
  ``checkpoint_filter_fn`` plus the official per-output norms ``norm{i}``);
* necks and heads: mmdet 3.x / mmseg 1.x kept the 2.x / 0.x names of the FPN, RPN, RoI (Mask R-CNN, Cascade,
  Sparse R-CNN), RetinaNet, ATSS, UPerNet, FCN and Semantic-FPN heads (mmdet 3.3's and mmseg 1.2.2's own
  metafiles list their v2.0 / v0.5 weights for these models), so official mmdet 2.x / mmseg 0.x files
  (FocalNet, DaViT, LITv2, EfficientViT, TransNeXt Mask R-CNN / UPerNet) and the mmdet 3.0 / mmseg 1.0 ones
  (TransNeXt DINO / Mask2Former) load as they are;
* per-output norms that official dense backbones keep under another name than ``norm{i}`` are renamed first
  (:func:`official_output_norms`: qhfan/RALA's ``extra_norms.{i}.norm``, RAVLT); the rest of those files
  (RAVLT ``GLTA``, Agent-PVT and Agent-Swin of LeapLabTHU/Agent-Attention, mmdet 2.x / mmseg 0.x) is the
  classifier's layout, which the family filters map (RoPE / relative-position-index buffers dropped, Agent-Swin's
  fused agent ``qkv`` split, Agent-Swin's ``norm{i}`` as they are);
* detrex / detectron2 DINO files (FocalNet-L DINO) are renamed to mmdet's DINO (:func:`detrex_dino_to_mmdet`);
* then every model tensor must be in the checkpoint with its shape and every checkpoint tensor must be used;
  otherwise a ValueError names the first missing and unexpected keys (``strict=False`` on the hook loads the
  matching part instead, e.g. to fine-tune on other classes).

The runner (``backbones.mm.runner``) adds the hook to every config; the project's runtime bases list it too, so
mmdet's / mmseg's own ``tools/train.py`` and ``tools/test.py`` get it with ``custom_imports=['backbones.mm']``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

from .adapter import TimmBackboneAdapter

__all__ = ["DenseCheckpointLayoutHook", "convert_dense_state_dict", "check_dense_state_dict", "detrex_dino_to_mmdet",
           "official_output_norms"]

_HOOK = "DenseCheckpointLayoutHook"


# ------------------------------------------------------------------------------------------- detrex -> mmdet
# detrex projects/dino (DINO, DINOTransformer, BaseTransformerLayer, ChannelMapper / ConvNormAct) -> mmdet 3.x DINO
_DETREX_RULES = [
    (r"^transformer\.encoder\.layers\.(\d+)\.attentions\.0\.", r"encoder.layers.\1.self_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.ffns\.0\.", r"encoder.layers.\1.ffn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norms\.", r"encoder.layers.\1.norms."),
    (r"^transformer\.decoder\.layers\.(\d+)\.attentions\.0\.", r"decoder.layers.\1.self_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.attentions\.1\.", r"decoder.layers.\1.cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ffns\.0\.", r"decoder.layers.\1.ffn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norms\.", r"decoder.layers.\1.norms."),
    (r"^transformer\.decoder\.(ref_point_head|norm)\.", r"decoder.\1."),
    (r"^transformer\.level_embeds$", "level_embed"),
    (r"^transformer\.enc_output\.", "memory_trans_fc."),
    (r"^transformer\.enc_output_norm\.", "memory_trans_norm."),
    (r"^transformer\.tgt_embed\.", "query_embedding."),
    (r"^label_enc\.", "dn_query_generator.label_embedding."),
    (r"^class_embed\.(\d+)\.", r"bbox_head.cls_branches.\1."),
    # detrex MLP(256, 256, 4, 3): layers.0..2 (ReLU between, not indexed); mmdet: Sequential Linear/ReLU/... 0, 2, 4
    (r"^bbox_embed\.(\d+)\.layers\.(\d)\.", lambda m: f"bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}."),
    (r"^neck\.(convs|extra_convs)\.(\d+)\.norm\.", r"neck.\1.\2.gn."),
]


def is_detrex_dino(state_dict: Mapping[str, Any]) -> bool:
    return "transformer.level_embeds" in state_dict and any(k.startswith("class_embed.") for k in state_dict)


def detrex_dino_to_mmdet(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a detrex DINO state dict to mmdet 3.x's DINO (the backbone keys are left to the adapter).

    detrex registers its class / box branches twice (``class_embed.*`` and ``transformer.decoder.class_embed.*``
    are the same modules); the decoder's aliases are dropped.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed.")):
            continue
        for pattern, repl in _DETREX_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


# ------------------------------------------------------------------------------ official dense backbone norms
# Output norms of official dense backbones named otherwise than the adapter's norm{i} (backbone-relative keys).
_OUTPUT_NORM_RULES = [
    # qhfan/RALA GLTA: extra_norms = ModuleList of LayerNorm2d, each wrapping an nn.LayerNorm as `.norm`; one per
    # stage whatever the neck reads (the adapter drops those of stages it does not return)
    (r"^extra_norms\.(\d+)\.norm\.(weight|bias)$", r"norm\1.\2"),
]


def official_output_norms(backbone_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename official per-output norms (backbone-relative keys) to the adapter's ``norm{i}``; the rest unchanged."""
    out = {}
    for key, value in backbone_state_dict.items():
        for pattern, repl in _OUTPUT_NORM_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------ whole-model dicts
def _model_of(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def convert_dense_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "<state dict>"
                             ) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a detector / segmentor state dict (official or this repository's layout) to ``model``'s names.

    Returns ``(state_dict, unexpected_backbone_keys)``; a model whose backbone is not a
    :class:`TimmBackboneAdapter` gets the (detrex-renamed) dict back unchanged.
    """
    model = _model_of(model)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if is_detrex_dino(sd):
        sd = detrex_dino_to_mmdet(sd)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, TimmBackboneAdapter):
        return sd, []
    own = model.state_dict()
    inner = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not inner or all(f"backbone.{k}" in own for k in inner):  # nothing to convert (or this repository's layout)
        return sd, []
    try:
        converted, unexpected = backbone.convert_state_dict(official_output_norms(inner), source)
    except ValueError as e:  # another family / size: name the keys as the whole-model check does
        missing = [k for k in own if k.startswith("backbone.") and k not in sd]
        extra = [k for k in sd if k.startswith("backbone.") and k not in own]
        raise ValueError(
            f"checkpoint {source} does not fit this {type(model).__name__}: its backbone part does not convert to "
            f"{backbone.model_name}; first missing: {missing[:4]}, first unexpected: {extra[:4]}\n  ({e})"
        ) from e
    rest = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
    rest.update({f"backbone.{k}": v for k, v in converted.items()})
    return rest, [f"backbone.{k}" for k in unexpected]


def check_dense_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "<state dict>",
                           unexpected: list[str] | None = None, strict: bool = True) -> None:
    """Raise (``strict``) or warn when ``state_dict`` does not hold exactly ``model``'s tensors and shapes."""
    model = _model_of(model)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = sorted(set(unexpected or []) | {k for k in state_dict if k not in own})
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return
    lines = [f"checkpoint {source} does not fit this {type(model).__name__} "
             f"(backbone {getattr(getattr(model, 'backbone', None), 'model_name', '?')}):"]
    if missing:
        lines.append(f"  {len(missing)} of the model's {len(own)} tensors are missing, first: {missing[:4]}")
    if extra:
        lines.append(f"  {len(extra)} checkpoint tensors are unexpected, first: {extra[:4]}")
    if shapes:
        lines.append(f"  {len(shapes)} shape mismatches, first: {shapes[:3]}")
    lines.append("  Is it a checkpoint of another model family, size or detector / segmentor? To load the "
                 f"matching part on purpose (e.g. to fine-tune on other classes) use custom_hooks = "
                 f"[dict(type='{_HOOK}', strict=False)].")
    if strict:
        raise ValueError("\n".join(lines))
    print_log("\n".join(lines), logger="current", level=logging.WARNING)


@HOOKS.register_module()
class DenseCheckpointLayoutHook(Hook):
    """Convert official detector / segmentor checkpoints to the model's layout when mmengine loads them.

    Runs in ``after_load_checkpoint`` (``load_from``, ``tools/test.py``, ``--resume``), before mmengine's
    non-strict ``load_state_dict``; with ``strict=True`` a checkpoint that does not cover the model exactly is an
    error naming the first missing and unexpected keys.
    """

    priority = "VERY_HIGH"

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        source = str(getattr(runner, "_load_from", None) or "<checkpoint>")
        tensors_at_top = any(isinstance(v, Tensor) for v in checkpoint.values())
        if tensors_at_top:
            sd = dict(checkpoint)
        elif isinstance(checkpoint.get("state_dict"), Mapping):
            sd = checkpoint["state_dict"]
        elif isinstance(checkpoint.get("model"), Mapping):  # detectron2 / detrex, timm-style files
            sd = checkpoint["model"]
        else:
            raise ValueError(f"checkpoint {source} holds no state dict (top-level keys {sorted(checkpoint)[:8]})")
        model = runner.model
        converted, unexpected = convert_dense_state_dict(model, sd, source)
        check_dense_state_dict(model, converted, source, unexpected, strict=self.strict)
        renamed = set(converted) != set(sd)
        if tensors_at_top:
            checkpoint.clear()
        checkpoint["state_dict"] = converted  # what mmengine loads next
        print_log(f"{_HOOK}: {source}: {len(converted)} tensors"
                  + (", converted from the official layout" if renamed else "")
                  + (", checked: they cover the model exactly" if self.strict else ""), logger="current")
