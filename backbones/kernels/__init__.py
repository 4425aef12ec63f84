"""Fused Triton kernels for the sparse token mixers, and the choice between them and the PyTorch paths.

Three mixers attend over sparse key sets that the PyTorch paths gather or shift explicitly:

* routed attention (:class:`~backbones.blocks.BiLevelRoutingAttention`, BiFormer): each region's queries against
  the k/v of its top-k routed regions -- :mod:`backbones.kernels.routed_attention`;
* aggregated attention (:class:`~backbones.blocks.AggregatedAttention`, TransNeXt): each pixel against its k x k
  neighbourhood and a pooled map under one softmax -- :mod:`backbones.kernels.aggregated_attention`;
* halo attention (:class:`~backbones.blocks.HaloAttention`, HaloNet): b x b query blocks against their
  (b + 2h)^2 windows -- :mod:`backbones.kernels.halo_attention`.

Each kernel module holds a forward and a backward Triton kernel behind an ``autograd.Function``: the softmax is
computed online (no gathered keys, no attention matrix in memory), accumulations are fp32 whatever the input dtype,
and the backward pass recomputes the attention from the saved log-sum-exp.

Choice (:func:`select`), per call:

* ``BACKBONES_KERNELS`` unset or ``auto``: Triton for CUDA tensors when Triton imports and the kernel supports the
  call, PyTorch otherwise (CPU tensors, unsupported options, ``torch.jit.trace`` and FX symbolic tracing);
* ``BACKBONES_KERNELS=torch``: always PyTorch;
* ``BACKBONES_KERNELS=triton``: always Triton, an error where it cannot run. CPU tensors run only under Triton's
  interpreter (``TRITON_INTERPRET=1`` set before the first kernel is imported): that is how the tests check the
  kernels on machines without a GPU.

The choice is visible: every block that dispatches records it in its ``last_kernel`` attribute ("torch" or
"triton"), and each new (mixer, choice, reason) is logged once at DEBUG level on the ``backbones.kernels`` logger.

Graph capture: :func:`select` is plain Python on constants for ``torch.compile`` / ``torch.export`` (no graph break,
``fullgraph=True`` works), and ``auto`` takes the kernels on CUDA there as in eager mode. The choice is then made
once, when the graph is traced:
the environment variables are read at that time (they are not guards -- set them before compiling, or call
``torch._dynamo.reset()`` after changing them), and the DEBUG line is written at trace time.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor

__all__ = ["BACKENDS", "DTYPES", "ENV_VAR", "interpreter_enabled", "requested_backend", "select", "triton_available"]

ENV_VAR = "BACKBONES_KERNELS"
BACKENDS = ("auto", "torch", "triton")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what every kernel takes (accumulating in fp32)
_logger = logging.getLogger(__name__)
_logged: set[tuple[str, str, str]] = set()


@functools.lru_cache(maxsize=1)
def _import_triton() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else at import
        return False
    return True


@torch.compiler.assume_constant_result  # a fact of the install: a constant for dynamo, which traces no import
def triton_available() -> bool:
    """Whether ``import triton`` works (it ships with the CUDA builds of torch)."""
    return _import_triton()


def interpreter_enabled() -> bool:
    """Whether Triton's CPU interpreter is on (``TRITON_INTERPRET=1``): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def requested_backend() -> str:
    """The value of ``BACKBONES_KERNELS`` ("auto" when unset); a clear error for anything else."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)} (or unset), got {value!r}")
    return value


# Called by dynamo at trace time with constant arguments (its result taken as a constant): the log line is written
# once per traced graph instead of a logger call in the graph, which dynamo refuses under fullgraph=True.
@torch.compiler.assume_constant_result
def _log(op: str, backend: str, reason: str) -> bool:
    key = (op, backend, reason)
    if key not in _logged:
        _logged.add(key)
        _logger.debug("%s: %s kernel (%s)", op, backend, reason)
    return True


def select(op: str, *tensors: Tensor, unsupported: str | None = None) -> str:
    """Pick "torch" or "triton" for one call of mixer ``op`` on ``tensors``.

    ``unsupported`` is the reason the Triton kernel cannot serve this call (an option or shape it lacks), or None;
    tensors of a dtype outside :data:`DTYPES` are unsupported too. With ``BACKBONES_KERNELS=triton`` an unsupported
    call, a missing Triton, a CPU tensor without the interpreter or FX symbolic tracing raise a ``RuntimeError`` that
    says which. Safe inside ``torch.compile(fullgraph=True)`` and ``torch.export``: only constants (devices, dtypes,
    environment) decide, and under compilation ``auto`` takes the kernels on CUDA as in eager mode.
    """
    requested = requested_backend()
    if requested == "torch":
        _log(op, "torch", f"{ENV_VAR}=torch")
        return "torch"
    if any(isinstance(t, torch.fx.Proxy) for t in tensors):  # FX symbolic tracing: no devices or dtypes to look at
        if requested == "triton":
            raise RuntimeError(
                f"{op}: {ENV_VAR}=triton, but FX symbolic tracing cannot trace the Triton kernels (use "
                "torch.compile or torch.export, which keep them in the graph)"
            )
        _log(op, "torch", "auto, FX symbolic tracing")
        return "torch"
    if unsupported is None:
        other = sorted({str(t.dtype) for t in tensors if t.dtype not in DTYPES})
        if other:
            unsupported = f"dtype {', '.join(other)} (the kernels take float32, float16 and bfloat16)"
    devices = {t.device.type for t in tensors}
    on_cuda = devices == {"cuda"}
    interpreted = devices == {"cpu"} and interpreter_enabled()
    if requested == "triton":
        problem = None
        if not triton_available():
            problem = "Triton is not importable"
        elif not (on_cuda or interpreted):
            problem = (
                f"the tensors are on {sorted(devices)}; Triton kernels need CUDA tensors, or CPU tensors with "
                "TRITON_INTERPRET=1 (Triton's interpreter, for tests)"
            )
        elif unsupported:
            problem = f"the kernel does not support {unsupported}"
        if problem:
            raise RuntimeError(f"{op}: {ENV_VAR}=triton, but {problem}")
        _log(op, "triton", f"{ENV_VAR}=triton")
        return "triton"
    # auto
    if not on_cuda:
        reason = "not CUDA tensors"
    elif torch.jit.is_tracing() or torch.jit.is_scripting():
        reason = "torch.jit tracing / scripting"
    elif not triton_available():
        reason = "Triton not importable"
    elif unsupported:
        reason = f"unsupported: {unsupported}"
    else:
        _log(op, "triton", "auto, CUDA tensors")
        return "triton"
    _log(op, "torch", f"auto, {reason}")
    return "torch"
