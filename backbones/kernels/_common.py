"""Small helpers shared by the Triton kernel modules (imports Triton: load only when a kernel is used)."""

from __future__ import annotations

import torch
import triton

__all__ = ["ACC_DTYPES", "block_dim", "dot_precision"]

# Dtypes the kernels take; accumulation is fp32 for all of them.
ACC_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_dim(n: int, minimum: int = 16) -> int:
    """Power-of-two tile side covering n (``tl.dot`` wants every side >= 16)."""
    return max(minimum, triton.next_power_of_2(int(n)))


def dot_precision(dtype: torch.dtype) -> str:
    """``input_precision`` for ``tl.dot`` on fp32 inputs: TF32 only where torch's own matmuls allow it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"
