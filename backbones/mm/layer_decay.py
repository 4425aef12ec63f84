"""Layer-wise learning-rate decay for detectors / segmentors whose backbone is a timm-style model.

Layer ids come from the backbone model's own ``group_matcher`` (``timm.models.group_parameters(model,
model.group_matcher(coarse=False), reverse=True)``: 0 = stem, then one id per block). Parameters outside the
backbone model (neck, heads, the adapter's per-output norms) get the top id ``max + 1``, so their scale is 1.
A parameter of layer ``i`` trains with ``lr = base_lr * layer_decay_rate ** (top - i)``.

Weight decay is 0 for parameters with ``ndim <= 1`` (norms, biases, layer scales), for the names the model
lists in ``no_weight_decay()`` and for names matching ``no_weight_decay_names`` (fnmatch patterns; defaults
cover position embeddings, relative-position / attention bias tables and tokens).

Config::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.9))
"""

from __future__ import annotations

import fnmatch
import logging

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

__all__ = ["LayerDecayOptimWrapperConstructor", "layer_ids"]

DEFAULT_NO_WEIGHT_DECAY = (
    "*pos_embed*",
    "*pos_emb*",
    "*relative_position*",
    "*bias_table*",
    "*attention_biases*",
    "*cls_token*",
    "*dist_token*",
    "*mask_token*",
)
_KEYS = {"layer_decay_rate", "no_weight_decay_names", "weight_decay_exclude_1d"}


def _backbone_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Outermost submodules (name, module) that have a timm ``group_matcher``."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if callable(getattr(m, "group_matcher", None)) and not any(
            name == p or name.startswith(p + ".") or p == "" for p, _ in found
        ):
            found.append((name, m))
    return found


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int, set[str]]:
    """Map every parameter name of ``model`` to a layer id; return (ids, top id, no-weight-decay names)."""
    from timm.models import group_parameters

    backbones = _backbone_models(model)
    if not backbones:
        raise ValueError(
            "LayerDecayOptimWrapperConstructor: no submodule with a timm group_matcher() found; "
            "use a TimmBackboneAdapter backbone (or a timm model)"
        )
    ids: dict[str, int] = {}
    no_wd: set[str] = set()
    for prefix, sub in backbones:
        dot = f"{prefix}." if prefix else ""
        for name, lid in group_parameters(sub, sub.group_matcher(coarse=False), reverse=True).items():
            ids[dot + name] = lid
        nwd = sub.no_weight_decay() if callable(getattr(sub, "no_weight_decay", None)) else set()
        no_wd |= {dot + n for n in nwd}
    top = max(ids.values()) + 1
    for name, _ in model.named_parameters():
        ids.setdefault(name, top)
    return ids, top, no_wd


class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise lr decay driven by the backbone's ``group_matcher``.

    paramwise_cfg keys:
        layer_decay_rate (float, default 1.0): lr scale per layer below the top.
        no_weight_decay_names (sequence of fnmatch patterns): extra names without weight decay (matched
            against the full parameter name, e.g. ``'*pos_embed*'``); defaults to :data:`DEFAULT_NO_WEIGHT_DECAY`.
        weight_decay_exclude_1d (bool, default True): no weight decay for ndim <= 1 params (norms, biases).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = set(paramwise_cfg) - _KEYS
        if unknown:
            raise ValueError(f"LayerDecayOptimWrapperConstructor: unknown paramwise_cfg keys {sorted(unknown)}; "
                             f"known: {sorted(_KEYS)}")
        paramwise_cfg.setdefault("layer_decay_rate", 1.0)  # non-empty: the base class then calls add_params
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = self.paramwise_cfg
        decay = float(cfg["layer_decay_rate"])
        patterns = tuple(cfg.get("no_weight_decay_names", DEFAULT_NO_WEIGHT_DECAY))
        exclude_1d = bool(cfg.get("weight_decay_exclude_1d", True))
        base_wd = self.base_wd or 0.0

        ids, top, model_no_wd = layer_ids(module)
        groups: dict[str, dict] = {}
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            no_wd = (
                (exclude_1d and p.ndim <= 1)
                or name in model_no_wd
                or any(fnmatch.fnmatch(name, pat) for pat in patterns)
            )
            lid = ids[name]
            key = f"layer_{lid}_{'no_decay' if no_wd else 'decay'}"
            if key not in groups:
                scale = decay ** (top - lid)
                groups[key] = dict(
                    params=[], param_names=[], lr=self.base_lr * scale, lr_scale=scale, layer_id=lid,
                    weight_decay=0.0 if no_wd else base_wd, group_name=key,
                )
            groups[key]["params"].append(p)
            groups[key]["param_names"].append(name)
        params.extend(groups[k] for k in sorted(groups, key=lambda k: (groups[k]["layer_id"], k)))
        print_log(
            f"LayerDecayOptimWrapperConstructor: {len(groups)} groups, layer ids 0..{top} "
            f"(top = outside the backbone model), layer_decay_rate={decay}, "
            f"lowest lr scale {decay ** top:.3g}",
            logger="current",
            level=logging.INFO,
        )
        for k in sorted(groups, key=lambda k: (groups[k]["layer_id"], k)):
            g = groups[k]
            print_log(f"  {k}: {len(g['params'])} params, lr_scale {g['lr_scale']:.4g}, wd {g['weight_decay']}, "
                      f"e.g. {g['param_names'][0]}", logger="current", level=logging.DEBUG)
