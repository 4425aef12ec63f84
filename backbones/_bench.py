"""References that ``tools/benchmark.py --compare`` times our models against.

For a name this repository replaces (``backbones.TIMM_REPLACEMENTS``), the reference is timm's own implementation
(``backbones.timm_original(name)``). A family may instead register a clean-room reference of its own, e.g. the
official layout rewritten for parity checks, with::

    from backbones._bench import register_reference

    register_reference("biformer_*", lambda name, **kwargs: ReferenceBiFormer(**ARCHS[name], **kwargs), "official")

``name_pattern`` is an fnmatch pattern over model names; ``factory(name, **model_kwargs)`` returns an ``nn.Module``
that takes the same input as ours. The latest registration that matches a name wins, and a registered reference
takes precedence over timm's original.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

__all__ = ["Reference", "register_reference", "benchmark_references", "get_reference"]


class Reference(NamedTuple):
    name_pattern: str
    factory: Callable[..., nn.Module]
    label: str


_REFERENCES: list[Reference] = []


def register_reference(name_pattern: str, factory: Callable[..., nn.Module], label: str) -> None:
    """Register ``factory(name, **model_kwargs) -> nn.Module`` as the reference for names matching the pattern."""
    if not callable(factory):
        raise TypeError(f"factory for {name_pattern!r} must be callable, got {type(factory).__name__}")
    _REFERENCES.append(Reference(name_pattern, factory, label))


def benchmark_references(name: str | None = None) -> list[Reference]:
    """The registered references, or those whose pattern matches ``name`` (latest registration first)."""
    refs = list(reversed(_REFERENCES))
    return refs if name is None else [r for r in refs if fnmatch.fnmatchcase(name, r.name_pattern)]


def get_reference(name: str) -> tuple[Callable[..., nn.Module], str]:
    """``(build, label)`` for ``--compare``: ``build(**model_kwargs)`` makes the reference model for ``name``.

    Raises ``KeyError`` naming the options when ``name`` has neither a registered reference nor a timm original.
    """
    from ._registry import is_replacement, list_models, timm_original

    matches = benchmark_references(name)
    if matches:
        ref = matches[0]

        def build_registered(**kwargs: Any) -> nn.Module:
            return ref.factory(name, **kwargs)

        return build_registered, ref.label
    try:
        entry = timm_original(name.split(".")[0])
    except KeyError:
        replaced = [n for n in list_models() if is_replacement(n)]
        raise KeyError(
            f"--compare: {name!r} has no reference: it does not replace a timm model (replaced names: "
            f"{replaced or 'none registered'}) and no reference registered in backbones._bench matches it "
            f"(patterns: {[r.name_pattern for r in _REFERENCES] or 'none'})"
        ) from None

    def build_timm(**kwargs: Any) -> nn.Module:
        return entry(pretrained=False, **kwargs)

    return build_timm, "timm"
