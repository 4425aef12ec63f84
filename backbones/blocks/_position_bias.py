"""Position-bias geometry of TransNeXt's aggregated / length-scaled attention, derived from the input size alone.

The continuous position bias (CPB) of :mod:`backbones.blocks.aggregated_attention` is an MLP over log-spaced
relative offsets between query pixels and pooled-key cells. Which offsets occur, how a bias table trained on the
pre-training grid is interpolated to another grid, and each query's attention length scale depend only on
(H, W, window, pool) sizes: they are computed here once per size (``lru_cache``) and gathered by the mixers.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _disable_current_modes

from ._windows import is_compiling


def _pair(value: int | tuple[int, int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return pair


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


# ----------------------------------------------------------------------------------------------------------------
# Geometry: computed once per size on the CPU (values are needed; explicit device="cpu" so that a default device
# such as "meta" does not apply) in float64, cached per device, cast on use.


def cpb_coords(delta: Tensor) -> Tensor:
    """Log-spaced CPB input from offsets already scaled to +-8 at the pre-training size."""
    return torch.sign(delta) * torch.log2(delta.abs() + 1.0) / 3.0


def _axis_offsets(n_query: int, n_key: int, pretrain: int) -> Tensor:
    """(n_query, n_key) offsets along one axis between query pixels and pooled-key centroids, scaled to +-8."""
    query = torch.arange(n_query, dtype=torch.float64, device="cpu")
    # A pooled key sits at the mean index of the pixels its adaptive-average-pool bin covers.
    key = F.adaptive_avg_pool1d(query[None], n_key)[0]
    return (query[:, None] - key[None, :]) / max(pretrain - 1, 1) * 8


def _linear_taps(n_in: int, n_out: int) -> tuple[Tensor, Tensor]:
    """Input indices and weights (n_out, 2) of PyTorch's linear resize (align_corners=False) from n_in to n_out."""
    eye = torch.eye(n_in, dtype=torch.float64, device="cpu")
    matrix = F.interpolate(eye[None], size=n_out, mode="linear")[0]  # (in, out)
    weight, index = matrix.t().topk(min(2, n_in), dim=-1)
    return index, weight


def _axis_plan(n_query: int, n_key: int, pretrain: int, ref: tuple[int, int] | None) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct offsets (U,) along one axis, and per (query, key) the table indices and weights (n_q, n_k, T).

    Without ``ref`` every pair reads one table entry. With ``ref = (ref_query, ref_key)`` the table belongs to the
    reference grid and each pair mixes the entries its bilinear taps (2 over queries x 2 over keys) point at.
    """
    if ref is None:
        values, index = torch.unique(_axis_offsets(n_query, n_key, pretrain), return_inverse=True)
        return values, index[..., None], torch.ones(n_query, n_key, 1, dtype=torch.float64, device="cpu")
    values, ref_index = torch.unique(_axis_offsets(ref[0], ref[1], pretrain), return_inverse=True)
    q_idx, q_w = _linear_taps(ref[0], n_query)
    k_idx, k_w = _linear_taps(ref[1], n_key)
    index = ref_index[q_idx[:, None, :, None], k_idx[None, :, None, :]].flatten(2)  # (n_q, n_k, taps)
    weight = (q_w[:, None, :, None] * k_w[None, :, None, :]).flatten(2)
    used = (weight != 0).flatten(0, 1).any(0)  # drop taps that are zero everywhere (e.g. no resize on an axis)
    index, weight = index[..., used], weight[..., used]
    # Keep only the table entries some tap reads: a map smaller than the reference reads few of them.
    entries, index = torch.unique(index, return_inverse=True)
    return values[entries], index, weight


def _axis_plan_symbolic(n_query, n_key, pretrain: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_axis_plan` without a reference grid, for symbolic sizes (torch.export with dynamic H, W).

    ``torch.unique`` has a data-dependent length, so the table holds every half-integer offset between the
    smallest and the largest that occur (a superset of the distinct ones: a pair reads the same offset, so the
    same bias, as from the de-duplicated table). Doubled, the offset of query i to the centroid of adaptive-pool bin
    j = [floor(j n / m), ceil((j + 1) n / m)) is the integer 2 i - start_j - end_j + 1; its extremes are
    -(start_{m-1} + n - 1) (the first query and the last bin) and 2 n - 1 - end_0 (the last query and the first).
    """
    query = torch.arange(n_query, device="cpu")
    bins = torch.arange(n_key, device="cpu")
    start, end = bins * n_query // n_key, ((bins + 1) * n_query + n_key - 1) // n_key
    doubled = 2 * query[:, None] - (start + end - 1)[None, :]  # (n_q, n_k)
    lowest = -((n_key - 1) * n_query // n_key + n_query - 1)
    highest = 2 * n_query - 1 - (n_query + n_key - 1) // n_key
    # (lowest + k) / 2 in float64, then the same scaling as _axis_offsets: bit-identical table rows
    values = (torch.arange(highest - lowest + 1, dtype=torch.float64, device="cpu") + lowest) / 2
    values = values / max(pretrain - 1, 1) * 8
    index = (doubled - lowest)[..., None]
    return values, index, torch.ones(index.shape, dtype=torch.float64, device="cpu")


def is_symbolic(*sizes) -> bool:
    """Whether any size is a SymInt (torch.export / torch.compile with dynamic shapes): no cache, no unique."""
    return any(isinstance(v, torch.SymInt) for v in sizes)


def adaptive_pool_matrix(n_in, n_out, like: Tensor) -> Tensor:
    """(n_out, n_in) matrix of adaptive average pooling along one axis: row j averages [floor(j n / m),
    ceil((j + 1) n / m)) (PyTorch's bins), in ``like``'s dtype and device."""
    i = torch.arange(n_in, device=like.device)
    j = torch.arange(n_out, device=like.device)
    start, end = j * n_in // n_out, ((j + 1) * n_in + n_out - 1) // n_out
    inside = (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool_nhwc(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """(B, H, W, C) -> (B, C, out_h, out_w) adaptive average pool of a channels-last map (a channels_last view).

    Concrete sizes take the aten op. Symbolic sizes (torch.compile / torch.export with dynamic H, W) take two
    products with the bin-averaging matrices: aten's adaptive-pool decomposition, which the ONNX exporter applies,
    picks its form and gather indices from the example size, so an ONNX graph traced at 224 pools other sizes with
    the wrong bins. Not scriptable: TorchScript callers pool with the aten op themselves.
    """
    b, h, w, c = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    if not is_symbolic(h, w):
        return F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), (out_h, out_w))
    rows = adaptive_pool_matrix(h, out_h, x)  # (out_h, H)
    cols = adaptive_pool_matrix(w, out_w, x)  # (out_w, W)
    x = torch.matmul(rows, x.reshape(b, h, w * c)).view(b * out_h, w, c)
    return torch.matmul(cols, x).view(b, out_h, out_w, c).permute(0, 3, 1, 2)


class _BiasPlan(NamedTuple):
    table: Tensor  # (Uh * Uw, 2) log-spaced MLP input, rows (dh, dw) in row-major (Uh, Uw) order
    shape: tuple[int, int]  # (Uh, Uw)
    index_h: Tensor  # (H, Hk, T) long
    weight_h: Tensor  # (H, Hk, T)
    index_w: Tensor  # (W, Wk, S) long
    weight_w: Tensor  # (W, Wk, S)


def _bias_plan(
    query: tuple[int, int],
    key: tuple[int, int],
    pretrain: tuple[int, int],
    ref_query: tuple[int, int] | None,
    ref_key: tuple[int, int] | None,
    device: torch.device,
) -> _BiasPlan:
    """The per-size plan: cached for concrete sizes, built in the traced graph for symbolic ones."""
    if is_symbolic(*query, *key):
        if ref_query is not None:
            raise NotImplementedError(
                "pos_bias_mode='interpolate' needs concrete sizes (torch.export with dynamic H and W: use "
                "pos_bias_mode='extrapolate')"
            )
        return _build_bias_plan(query, key, pretrain, None, None, device)
    if is_compiling():  # concrete sizes under torch.compile: the cached plan enters the graph as constants
        table = _constant_plan_part(query, key, pretrain, ref_query, ref_key, device, 0)  # (Uh, Uw, 2)
        parts = [_constant_plan_part(query, key, pretrain, ref_query, ref_key, device, i) for i in range(1, 5)]
        return _BiasPlan(table.reshape(-1, 2), (table.shape[0], table.shape[1]), *parts)
    return _cached_bias_plan(query, key, pretrain, ref_query, ref_key, device)


@torch.compiler.assume_constant_result
def _constant_plan_part(
    query: tuple[int, int],
    key: tuple[int, int],
    pretrain: tuple[int, int],
    ref_query: tuple[int, int] | None,
    ref_key: tuple[int, int] | None,
    device: torch.device,
    part: int,
) -> Tensor:
    """One tensor of the cached plan (0: the table as (Uh, Uw, 2), then index_h, weight_h, index_w, weight_w).

    Dynamo runs this at trace time and keeps the result as a graph constant: traced, the plan's ``torch.unique``
    and boolean indexing would give the tables data-dependent (unbacked) lengths, which inductor cannot generate
    code for.
    """
    plan = _cached_bias_plan(query, key, pretrain, ref_query, ref_key, device)
    return plan.table.view(*plan.shape, 2) if part == 0 else plan[part + 1]


def _build_bias_plan(
    query: tuple[int, int],
    key: tuple[int, int],
    pretrain: tuple[int, int],
    ref_query: tuple[int, int] | None,
    ref_key: tuple[int, int] | None,
    device: torch.device,
) -> _BiasPlan:
    with torch.inference_mode(False), torch.no_grad():
        axes = []
        for a in range(2):
            ref = None if ref_query is None else (ref_query[a], ref_key[a])
            if is_symbolic(query[a], key[a]):
                axes.append(_axis_plan_symbolic(query[a], key[a], pretrain[a]))
            else:
                axes.append(_axis_plan(query[a], key[a], pretrain[a], ref))
        (vh, ih, wh), (vw, iw, ww) = axes
        # The set of (dh, dw) pairs is the product of the per-axis sets (every combination occurs), so this is
        # the official de-duplicated table, in the same (lexicographic) row order.
        table = cpb_coords(torch.stack(torch.meshgrid(vh, vw, indexing="ij"), dim=-1).reshape(-1, 2))
        plan = _BiasPlan(table, (vh.shape[0], vw.shape[0]), ih, wh, iw, ww)
        return _BiasPlan(*(t.to(device) if isinstance(t, Tensor) else t for t in plan))


@functools.lru_cache(maxsize=128)
def _cached_bias_plan(
    query: tuple[int, int],
    key: tuple[int, int],
    pretrain: tuple[int, int],
    ref_query: tuple[int, int] | None,
    ref_key: tuple[int, int] | None,
    device: torch.device,
) -> _BiasPlan:
    """The plan of concrete sizes, built once outside any tracing mode: under torch.export the fake tensors of the
    trace would otherwise be cached and served to later eager calls."""
    with _disable_current_modes():
        return _build_bias_plan(query, key, pretrain, ref_query, ref_key, device)


def _length_scale(height: int, width: int, window_size: int, num_pooled: int, device: torch.device) -> Tensor:
    """(H, W, 1, 1) ln(number of in-map window positions + pooled keys) per pixel (float64); cached for concrete
    sizes."""
    if is_symbolic(height, width, num_pooled):
        return _build_length_scale(height, width, window_size, num_pooled, device)
    if is_compiling():
        return _constant_length_scale(height, width, window_size, num_pooled, device)
    return _cached_length_scale(height, width, window_size, num_pooled, device)


def _build_length_scale(height: int, width: int, window_size: int, num_pooled: int, device: torch.device) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        pad = window_size // 2

        def valid(n: int) -> Tensor:
            i = torch.arange(n, device="cpu")
            return (i.clamp(max=pad) + (n - 1 - i).clamp(max=pad) + 1).clamp(max=window_size)

        count = valid(height)[:, None] * valid(width)[None, :]
        return torch.log(count.double() + num_pooled).view(height, width, 1, 1).to(device)


@functools.lru_cache(maxsize=128)
def _cached_length_scale(height: int, width: int, window_size: int, num_pooled: int, device: torch.device) -> Tensor:
    """As :func:`_cached_bias_plan`: built once, outside any tracing mode."""
    with _disable_current_modes():
        return _build_length_scale(height, width, window_size, num_pooled, device)


@torch.compiler.assume_constant_result
def _constant_length_scale(height: int, width: int, window_size: int, num_pooled: int, device: torch.device) -> Tensor:
    """The cached table as a graph constant under torch.compile (see :func:`_constant_plan_part`)."""
    return _cached_length_scale(height, width, window_size, num_pooled, device)


def _gather_bias(values: Tensor, plan: _BiasPlan) -> Tensor:
    """(heads, H * W, Hk * Wk) bias from the MLP output on the table, ``values`` (heads, Uh, Uw)."""
    heads = values.shape[0]
    height, key_h, taps_h = plan.index_h.shape
    width, key_w, taps_w = plan.index_w.shape
    col_index = plan.index_w.permute(2, 0, 1).unsqueeze(-2)  # (S, W, 1, Wk)
    if taps_h == 1 and taps_w == 1:
        bias = values[:, plan.index_h[:, None, :, None, 0], col_index[0]]  # (heads, H, W, Hk, Wk)
    else:
        rows = values[:, plan.index_h]  # (heads, H, Hk, T, Uw)
        rows = (rows * plan.weight_h[..., None].to(values.dtype)).sum(3) if taps_h > 1 else rows[:, :, :, 0]
        q_idx = torch.arange(height, device=values.device).view(height, 1, 1, 1)
        k_idx = torch.arange(key_h, device=values.device).view(1, 1, key_h, 1)
        col_weight = plan.weight_w.permute(2, 0, 1).unsqueeze(-2).to(values.dtype)  # (S, W, 1, Wk)
        bias = None
        for s in range(taps_w):
            term = rows[:, q_idx, k_idx, col_index[s]]  # (heads, H, W, Hk, Wk)
            if taps_w > 1:
                term = term * col_weight[s]
            bias = term if bias is None else bias + term
    return bias.reshape(heads, height * width, key_h * key_w)
