"""Equal budgets for ablations: widen or narrow a hybrid until it costs what a reference hybrid costs.

Comparing mixers is only fair at one budget: ``identity`` saves the 4 C^2 of an attention's projections per block,
``global`` pays N^2 C more MACs than ``window``. :func:`match_budget` takes two HybridNet configurations (keyword
arguments of ``timm.create_model``) and returns the second with its widths set so that its parameter count
(``metric="params"``) or its multiply-accumulates at ``img_size`` (``metric="macs"``) is within ``tol`` (2%) of the
first's. Two knobs:

* ``knob="mlp_ratio"`` (default): one FFN ratio r for every stage, found by bisection (the FFN hidden width moves
  in steps of one channel, so the match is fine-grained); the mixers keep their widths, the model differs from the
  reference only in its mixers and its FFN width;
* ``knob="embed_dims"``: one scale s for all stage widths, rounded to multiples of ``lcm(8, heads)`` (heads stay
  as the candidate has them), found by bisection; when rounding leaves the match outside ``tol``, the FFN ratio
  finishes it.

Params are counted on the meta device (no memory); MACs by ``torch.utils.flop_counter`` on one image on the CPU
(matmuls, convolutions and attention kernels; the FLOP count / 2), as ``tools/benchmark.py`` counts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ._common import per_stage

__all__ = ["BudgetMatch", "match_budget", "measure"]

METRICS = ("params", "macs")
KNOBS = ("mlp_ratio", "embed_dims")


@dataclass
class BudgetMatch:
    """The matched configuration and how close it came."""

    kwargs: dict[str, Any]
    metric: str
    target: float
    value: float
    steps: list[tuple[dict[str, Any], float]] = field(default_factory=list)

    @property
    def rel_error(self) -> float:
        return abs(self.value - self.target) / self.target


def _as_kwargs(config: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"mixers": config} if isinstance(config, str) else dict(config)


def measure(config: str | Mapping[str, Any], metric: str = "params", img_size: int = 224,
            model_name: str = "hybrid_tiny") -> float:
    """Parameters, or MACs of one ``img_size`` image, of ``timm.create_model(model_name, **config)``."""
    import timm

    import backbones  # noqa: F401  (registers the hybrids)

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    kwargs = _as_kwargs(config)
    if metric == "params":
        with torch.device("meta"):
            model = timm.create_model(model_name, **kwargs)
        return float(sum(p.numel() for p in model.parameters()))
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(model_name, **kwargs).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, model.in_chans, img_size, img_size))
    return counter.get_total_flops() / 2


def _bisect(fn, lo: float, hi: float, target: float, steps: int, stop: float) -> tuple[float, float]:
    """The x in [lo, hi] (fn increasing) whose fn(x) is closest to target, by bisection; stops early within
    ``stop`` (relative)."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        value = fn(mid)
        if best is None or abs(value - target) < abs(best[1] - target):
            best = (mid, value)
        if value < target:
            lo = mid
        else:
            hi = mid
        if abs(value - target) / target < stop:
            break
    return best


def match_budget(
    reference: str | Mapping[str, Any],
    candidate: str | Mapping[str, Any],
    metric: str = "params",
    img_size: int = 224,
    tol: float = 0.02,
    knob: str = "mlp_ratio",
    model_name: str = "hybrid_tiny",
    ratio_range: tuple[float, float] = (0.25, 16.0),
) -> BudgetMatch:
    """``candidate`` with its widths set so that its ``metric`` is within ``tol`` of ``reference``'s.

    Args:
        reference, candidate: HybridNet keyword arguments (a bare string is ``mixers=``).
        metric: "params" or "macs" (at ``img_size`` x ``img_size``).
        img_size: input side for "macs".
        tol: largest relative difference accepted.
        knob: "mlp_ratio" or "embed_dims" (module docstring).
        model_name: the registered hybrid whose defaults both start from.
        ratio_range: FFN ratios searched.

    Raises:
        ValueError: if no setting of the knob comes within ``tol`` (e.g. the range is too narrow).
    """
    import timm

    if knob not in KNOBS:
        raise ValueError(f"knob must be one of {KNOBS}, got {knob!r}")
    ref_kwargs, cand = _as_kwargs(reference), _as_kwargs(candidate)
    target = measure(ref_kwargs, metric, img_size, model_name)
    steps: list[tuple[dict[str, Any], float]] = []

    def cost(kwargs: dict[str, Any]) -> float:
        value = measure(kwargs, metric, img_size, model_name)
        steps.append((kwargs, value))
        return value

    as_is = cost(cand)
    if abs(as_is - target) / target <= tol / 4:  # already there (e.g. a mixer with the reference's weights)
        return BudgetMatch(cand, metric, target, as_is, steps)
    if knob == "embed_dims":
        with torch.device("meta"):
            base = timm.create_model(model_name, **cand)
        dims0 = list(base.embed_dims)
        heads = list(per_stage(cand.get("num_heads"), len(dims0), "num_heads", "match_budget"))
        heads = [h if h is not None else max(1, d // cand.get("head_dim", 32)) for h, d in zip(heads, dims0)]
        multiples = [math.lcm(8, h) for h in heads]

        def widths(scale: float) -> dict[str, Any]:
            dims = [max(m, round(d * scale / m) * m) for d, m in zip(dims0, multiples)]
            return dict(cand, embed_dims=tuple(dims), num_heads=tuple(heads))

        scale, value = _bisect(lambda s: cost(widths(s)), 0.25, 4.0, target, 12, tol / 4)
        cand = widths(scale)
        if abs(value - target) / target <= tol:
            return BudgetMatch(cand, metric, target, value, steps)

    lo, hi = ratio_range
    ratio, value = _bisect(lambda r: cost(dict(cand, mlp_ratio=r)), lo, hi, target, 30, tol / 4)
    result = BudgetMatch(dict(cand, mlp_ratio=ratio), metric, target, value, steps)
    if result.rel_error > tol:
        raise ValueError(
            f"match_budget: no {knob} within mlp_ratio {ratio_range} brings {candidate!r} within {tol:.1%} of the "
            f"reference's {metric} ({target:,.0f}); closest {value:,.0f} at mlp_ratio {ratio:.3f}"
        )
    return result
