"""Registration of this repository's models with timm.

Every entrypoint of `backbones.models` is registered through :func:`register_model`, which wraps timm's own
decorator. Four families ship under names timm already has (DaViT, FocalNet, EfficientViT-MSRA, HaloNet); ours
replace those entries on purpose, as drop-in equivalents, and only names on :data:`TIMM_REPLACEMENTS` may do so.
Any other collision with a timm name is an error. timm's own entrypoint stays reachable through
:func:`timm_original` (parity tests build timm's class with it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from timm.models import _registry as timm_registry

from ._weights import with_weight_sources

__all__ = ["register_model", "list_models", "timm_original", "is_replacement", "TIMM_REPLACEMENTS"]

# Names (fnmatch-free: full regular expressions) that may replace an existing timm entry.
TIMM_REPLACEMENTS: tuple[str, ...] = (
    r"focalnet_(tiny|small|base)_(srf|lrf)",
    r"focalnet_(large|xlarge|huge)_fl[34]",
    r"davit_(tiny|small|base|large|huge|giant|base_fl|huge_fl)",
    r"efficientvit_m[0-5]",
    r"(halonet26t|sehalonet33ts|halonet50ts|eca_halonext26ts|halonet_h1)",
)
_REPLACEMENT_RE = re.compile("|".join(f"(?:{p})" for p in TIMM_REPLACEMENTS))

_ours: dict[str, Callable[..., Any]] = {}
_timm_originals: dict[str, Callable[..., Any]] = {}


def is_replacement(name: str) -> bool:
    """True when ``name`` is on the allow-list of timm names this repository replaces."""
    return _REPLACEMENT_RE.fullmatch(name) is not None


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a model entrypoint with timm (use exactly like ``timm.models.register_model``).

    The entrypoint is wrapped by :func:`backbones._weights.with_weight_sources`: ``pretrained=True`` tries the hub
    mirror, then the official URL, and fails with an error that says what to do instead.
    """
    name = fn.__name__
    if name in _ours:
        raise RuntimeError(f"model name {name!r} is registered twice in backbones ({_ours[name].__module__})")
    existing = timm_registry._model_entrypoints.get(name)
    if existing is not None:
        if not is_replacement(name):
            raise RuntimeError(
                f"model name {name!r} from {fn.__module__} collides with timm's {existing.__module__}.{name}; "
                "only names on backbones._registry.TIMM_REPLACEMENTS may replace a timm entry"
            )
        _timm_originals[name] = existing
        # Drop timm's entry (and its tags/pretrained cfgs) first so registering ours raises no warning.
        timm_registry._clear_model_entries(name)
        del timm_registry._model_entrypoints[name]  # _clear_model_entries keeps the entrypoint itself
    fn = with_weight_sources(fn)
    _ours[name] = fn
    return timm_registry.register_model(fn)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Names of the models this repository registers, optionally filtered like ``timm.list_models``."""
    names = timm_registry.list_models(pattern, pretrained=pretrained)
    return sorted({n.split(".")[0] if not pretrained else n for n in names if n.split(".")[0] in _ours})


def timm_original(name: str) -> Callable[..., Any]:
    """timm's own entrypoint for a name this repository replaced (for parity checks)."""
    if name not in _timm_originals:
        raise KeyError(f"{name!r} does not replace a timm model; replaced names: {sorted(_timm_originals)}")
    return _timm_originals[name]
