"""Small helpers shared by the Triton kernel modules (imports Triton: load only when a kernel is used)."""

from __future__ import annotations

import torch
import triton

__all__ = ["block_dim", "dot_precision", "widen_bf16_dots"]



def block_dim(n: int, minimum: int = 16) -> int:
    """Power-of-two tile side covering n (``tl.dot`` wants every side >= 16)."""
    return max(minimum, triton.next_power_of_2(int(n)))


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` on fp32 inputs: TF32 only where torch's own matmuls allow it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def widen_bf16_dots(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether bf16 ``tl.dot`` operands go to fp32 first: only on CPU tensors, i.e. under Triton's interpreter, whose
    bf16 products are wrong (Triton 3.9); exact for bf16 values and still fp32 accumulation. Never on a GPU.

    Read through this module (``_common.widen_bf16_dots``) so that ``tools/compile_kernels.py`` can compile the GPU
    variant from CPU tensors.
    """
    return dtype == torch.bfloat16 and device.type == "cpu"
