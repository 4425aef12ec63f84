#!/usr/bin/env python3
"""Compile the Triton kernels for a GPU architecture on a machine without a GPU, as the real models launch them.

    python tools/compile_kernels.py                                  # biformer_small transnext_tiny halonet_h1, sm_90
    python tools/compile_kernels.py halonet50ts --arch 80 --img-size 512 --csv kernels.csv

Triton's interpreter (what the tests use without a GPU) runs the kernels' Python, not the compiler: it does not
see type errors, unsupported ops in lowering or register spills. This tool runs each model's forward and backward
on CPU tensors with every sparse mixer forced onto its Triton kernel, through Triton's real launch path (argument
binding, specialisation, ``triton.compile`` down to a cubin with the ptxas that ships with Triton) for the chosen
``--arch``, but a stand-in driver and no launch: the kernels are compiled, never run, so the numbers the models
produce here are meaningless. fp32 runs plainly, fp16 / bf16 under ``torch.autocast`` (as training would).

For every distinct compiled kernel it prints (and writes with ``--csv``) the kernel, the dtypes, warps, stages,
shared memory and, from ``cuobjdump``, registers and stack-frame bytes per thread (register spills land in the
stack frame: 0 means no spills). A kernel that does not compile stops the run with the compiler's error (exit
status 1). Needs Triton with its NVIDIA backend (the CUDA builds of torch bring it); no CUDA driver or GPU.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be real JIT functions, not interpreted ones

import torch  # noqa: E402

FIELDS = ["kernel", "arch", "dtypes", "num_warps", "num_stages", "shared_bytes", "registers", "stack_bytes", "seconds"]
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/compile_kernels.py", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=["biformer_small", "transnext_tiny", "halonet_h1"])
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (80 = A100, 90 = H100)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of constructor arguments")
    p.add_argument("--csv", default="")
    return p.parse_args(argv)


class _StandInDriver:
    """Enough of a Triton driver for argument binding and compilation: a fixed target, device 0, stream 0."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, stack-frame bytes) per thread from cuobjdump, or (None, None) where it is not available."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return (int(regs.group(1)) if regs else None), (int(stack.group(1)) if stack else None)


def install(arch: int) -> list[dict[str, Any]]:
    """Route every Triton launch of this process into a compile for ``sm_<arch>``; returns the list it fills."""
    import triton.runtime.jit as jit
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    driver.set_active(_StandInDriver(GPUTarget("cuda", arch, 32)))
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, Any] = {}

    def compile_only(self, key, signature, device, constexprs, options, attrs, warmup):
        if key in seen:
            return None
        _, _, target, _, _ = self.device_caches[device]
        start = time.perf_counter()
        kernel = self.compile(self.ASTSource(self, signature, constexprs, attrs), target=target,
                              options=options.__dict__)
        seen[key] = kernel
        regs, stack = _resource_usage(kernel.asm["cubin"])
        dtypes = sorted({t.lstrip("*") for t in signature.values() if isinstance(t, str) and t.startswith("*")})
        rows.append(dict(
            kernel=f"{self.fn.__module__.rsplit('.', 1)[-1]}.{self.fn.__name__}", arch=f"sm_{arch}",
            dtypes=",".join(dtypes), num_warps=kernel.metadata.num_warps, num_stages=kernel.metadata.num_stages,
            shared_bytes=kernel.metadata.shared, registers=regs, stack_bytes=stack,
            seconds=round(time.perf_counter() - start, 2),
        ))
        return None  # no launch: run() returns before touching the (absent) device

    jit.JITFunction._do_compile = compile_only
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import json

    import timm
    from tqdm import tqdm

    import backbones
    import backbones.kernels as kernels
    from backbones.kernels import _common

    rows = install(args.arch)
    # CPU tensors may take the Triton path (the blocks' choice), and the kernels compile their GPU variant (no
    # bf16 widening, which only Triton's CPU interpreter needs)
    kernels.interpreter_enabled = lambda: True
    _common.widen_bf16_dots = lambda dtype, device: False
    os.environ[kernels.ENV_VAR] = "triton"
    kwargs = json.loads(args.model_kwargs)
    jobs = [(name, dtype) for name in args.models for dtype in args.dtypes]
    for name, dtype in tqdm(jobs, desc="compile", dynamic_ncols=True):
        if name not in backbones.list_models():
            raise SystemExit(f"tools/compile_kernels.py: {name!r} is not a model of this repository")
        torch.manual_seed(0)
        model = timm.create_model(name, **kwargs).eval()
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
        amp = DTYPES[dtype]
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = model(x)
        out.float().sum().backward()
        used = {m.last_kernel for m in model.modules() if getattr(m, "last_kernel", None)}
        if used != {"triton"}:
            raise SystemExit(f"tools/compile_kernels.py: {name} ran {sorted(used) or 'no sparse mixer'}, not triton")
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        raise SystemExit("tools/compile_kernels.py: needs Triton with its NVIDIA backend") from None
    rows = run(args)
    widths = {f: max(len(f), *(len(str(r[f])) for r in rows)) for f in FIELDS} if rows else {}
    print("  ".join(f.ljust(widths[f]) for f in FIELDS))
    for r in rows:
        print("  ".join(str(r[f]).ljust(widths[f]) for f in FIELDS))
    print(f"\n{len(rows)} kernels compiled for sm_{args.arch} ({', '.join(args.models)}; {', '.join(args.dtypes)}; "
          f"{args.img_size}x{args.img_size}); registers / stack bytes per thread from cuobjdump (stack 0: no spills)")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return rows


if __name__ == "__main__":
    main()
