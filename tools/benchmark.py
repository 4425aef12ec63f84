#!/usr/bin/env python3
"""Parameters, FLOPs, speed and memory of models, and (``--compare``) the same against a reference implementation.

    python tools/benchmark.py focalnet_tiny_srf --batch-size 8 --img-size 224
    python tools/benchmark.py focalnet_tiny_srf focalnet_small_srf --compare --mode both --repeats 20 \
        --csv bench.csv --plot bench.png
    python tools/benchmark.py resnet50 --device cuda --dtype bf16 --input-size 256 320
    python tools/benchmark.py focalnet_tiny_srf --model-kwargs '{"embed_dim": 48, "depths": [1, 1, 2, 1]}'

Any timm name works (``import backbones`` registers ours). Figures, per model, implementation and mode:

* params: parameters, millions.
* GMACs: multiply-accumulates of one image's forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmul, conv, attention kernels: its FLOP count / 2; element-wise ops are not counted), or by fvcore's
  ``FlopCountAnalysis`` (which counts MACs) with ``--flops fvcore``.
* img/s and ms: ``--warmup`` untimed iterations, then ``--repeats`` timed ones; the median is reported. ``infer`` is
  a forward pass in eval mode under ``torch.inference_mode``; ``train`` is forward, cross-entropy, backward and an
  SGD step. ``--dtype bf16`` / ``fp16`` run under ``torch.autocast`` (weights stay fp32).
* peak MB: bytes of tensors allocated during one iteration above those live before it (weights, gradients and
  optimiser state already allocated do not count): ``torch.cuda.max_memory_allocated`` on CUDA, the memory events of
  ``torch.profiler`` on CPU (process RSS would mostly show the allocator's cache).

``--compare`` times the reference of each name as well: a reference registered in ``backbones._bench`` or else timm's
own implementation of a name this repository replaces (``backbones.timm_original``). Ours and the reference alternate
repeat by repeat (and which goes first alternates too), so drift in machine load hits both alike. ``ratio`` is
reference time / our time: above 1 means ours is faster.

``--kernels`` picks the kernels of the sparse token mixers (routed, aggregated and halo attention; see
``backbones.kernels``) by setting ``BACKBONES_KERNELS`` while the models run: ``--kernels triton`` times every model
with the Triton kernels, ``--kernels torch triton`` times each model once per choice in the same run (same weights,
interleaved repeats like ``--compare``) and puts ``ratio`` = torch ms / triton ms on the triton rows (above 1: the
kernels are faster). The ``kernels`` column says what the mixers actually ran (their ``last_kernel``); models
without such mixers leave it empty. The Triton kernels need CUDA (``--device cuda``).

``--compile`` times each model eager and under ``torch.compile`` in the same run (same weights, interleaved repeats
like ``--compare``): rows ``ours[eager]`` and ``ours[inductor]`` (``--compile-backend`` picks another backend,
``--compile-mode`` a mode such as ``max-autotune``, ``--fullgraph`` makes a graph break an error), ``ratio`` = eager
ms / compiled ms on the compiled rows (above 1: compiling pays) and ``compile_s`` the seconds of the first, compiling
call (not timed otherwise). Each mode compiles once (eval and train graphs differ).

Writes a CSV (one row per model / mode / implementation) with ``--csv`` and a bar chart of img/s with ``--plot``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

FIELDS = [
    "model", "impl", "mode", "device", "dtype", "batch_size", "input_size", "params_m", "gmacs", "flops_counter",
    "img_per_s", "ms_per_iter", "peak_mem_mb", "ratio", "repeats", "kernels", "compile_s",
]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/benchmark.py", description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="model names (timm's, or this repository's)")
    p.add_argument("--batch-size", "-b", type=int, default=8)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", type=int, default=None, help="square input side (default: the model's)")
    size.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the model's)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mode", choices=["infer", "train", "both"], default="infer")
    p.add_argument("--compare", action="store_true", help="also time the reference implementation of each name")
    p.add_argument("--repeats", type=int, default=10, help="timed iterations; the median is reported")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--flops", choices=["torch", "fvcore", "none"], default="torch", help="FLOP counter")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict of constructor arguments")
    p.add_argument("--kernels", nargs="+", choices=["auto", "torch", "triton"], default=None,
                   help="kernels of the sparse mixers (BACKBONES_KERNELS); two values, e.g. 'torch triton', time each "
                        "model with both in one run")
    p.add_argument("--compile", action="store_true",
                   help="time each model eager and under torch.compile in one run (interleaved)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend for --compile")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for --compile (e.g. max-autotune)")
    p.add_argument("--fullgraph", action="store_true", help="--compile with fullgraph=True (graph breaks are errors)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--fuse", action="store_true",
                   help="fold BN / re-parameterise every implementation (timm.models.reparameterize_model) "
                        "before timing; inference only")
    p.add_argument("--csv", default="", help="write the rows here")
    p.add_argument("--plot", default="", help="write a PNG bar chart of img/s here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not isinstance(args.model_kwargs, dict):
        p.error("--model-kwargs must be a JSON object, e.g. '{\"embed_dim\": 48}'")
    if args.kernels and len(set(args.kernels)) != len(args.kernels):
        p.error("--kernels: give each choice once")
    if args.kernels and len(args.kernels) > 1 and args.compare:
        p.error("--compare and several --kernels are separate comparisons; run them one at a time")
    if args.compile and (args.compare or (args.kernels and len(args.kernels) > 1)):
        p.error("--compile, --compare and several --kernels are separate comparisons; run them one at a time")
    if (args.compile_mode or args.fullgraph or args.compile_backend != "inductor") and not args.compile:
        p.error("--compile-backend, --compile-mode and --fullgraph apply to --compile")
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--repeats and --batch-size must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------------------------------------------
# measurements


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C++ writes to fd 2 (the profiler's start/stop and device-query lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def count_gmacs(model: nn.Module, x: torch.Tensor, counter: str) -> float | None:
    """Multiply-accumulates (G) of one image's forward pass; None when the counter cannot trace the model."""
    if counter == "none":
        return None
    model.eval()
    one = x[:1]
    try:
        with torch.no_grad():
            if counter == "fvcore":
                from fvcore.nn import FlopCountAnalysis

                analysis = FlopCountAnalysis(model, one)
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                return analysis.total() / 1e9  # fvcore's "flops" are MACs
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as fc:
                model(one)
            return fc.get_total_flops() / 2 / 1e9
    except Exception as e:  # noqa: BLE001  (a counter that cannot trace a model must not stop the benchmark)
        print(f"warning: {counter} could not count FLOPs: {type(e).__name__}: {e}", file=sys.stderr)
        return None


@contextlib.contextmanager
def _kernels_env(kernels: str | None) -> Iterator[None]:
    """``BACKBONES_KERNELS=kernels`` for the duration (nothing when None)."""
    if kernels is None:
        yield
        return
    saved = os.environ.get("BACKBONES_KERNELS")
    os.environ["BACKBONES_KERNELS"] = kernels
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BACKBONES_KERNELS"]
        else:
            os.environ["BACKBONES_KERNELS"] = saved


def kernels_used(model: nn.Module) -> str:
    """The kernels the sparse mixers of ``model`` ran last ("torch", "triton", both comma-joined, or "")."""
    used = {m.last_kernel for m in model.modules() if getattr(m, "last_kernel", None)}
    return ",".join(sorted(used))


class _Runner:
    """One model, one mode: ``step()`` runs one iteration, ``time_one()`` times one, ``peak_mb()`` its memory."""

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        x: torch.Tensor,
        dtype: str,
        num_classes: int,
        kernels: str | None = None,
        compiled: Callable[..., Any] | None = None,
    ) -> None:
        self.model, self.mode, self.x, self.kernels = model, mode, x, kernels
        self.forward = model if compiled is None else compiled  # torch.compile(model): same module, same weights
        self.device = x.device
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
        self.target = torch.randint(0, max(num_classes, 1), (x.shape[0],), device=x.device)
        if mode == "train":
            model.train()
            self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        else:
            model.eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self) -> None:
        with _kernels_env(self.kernels):
            self._step()

    def _step(self) -> None:
        if self.mode == "infer":
            with torch.inference_mode(), self._autocast():
                self.forward(self.x)
            return
        with self._autocast():
            out = self.forward(self.x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            loss = nn.functional.cross_entropy(out.float(), self.target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_one(self) -> float:
        self._sync()
        t0 = time.perf_counter()
        self.step()
        self._sync()
        return time.perf_counter() - t0

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            self._sync()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            self._sync()
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        current = peak = 0
        for e in sorted(events, key=lambda e: e.start_ns()):
            current += e.nbytes()
            peak = max(peak, current)
        return peak / 2**20


# ---------------------------------------------------------------------------------------------------------------
# models


def _build(name: str, kwargs: dict[str, Any], num_classes: int | None) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".")[0]):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SystemExit(f"tools/benchmark.py: unknown model {name!r}{hint}")
    if num_classes is not None:
        kwargs = dict(kwargs, num_classes=num_classes)
    return timm.create_model(name, pretrained=False, **kwargs)


def _build_reference(build: Callable[..., nn.Module], kwargs: dict[str, Any], name: str, label: str) -> nn.Module:
    try:
        return build(**kwargs)
    except TypeError as e:
        raise SystemExit(
            f"tools/benchmark.py: the {label} reference of {name} does not take --model-kwargs {kwargs} ({e}); "
            "timm's entrypoints fix their architecture arguments, so compare at the registered sizes"
        ) from None


def _input_size(model: nn.Module, args: argparse.Namespace) -> tuple[int, int]:
    if args.input_size:
        return tuple(args.input_size)
    if args.img_size:
        return args.img_size, args.img_size
    cfg_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(cfg_size[-2]), int(cfg_size[-1])


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 1000)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    import backbones
    from backbones._bench import get_reference

    kernel_choices = args.kernels or [None]
    # (label suffix, torch.compile backend or None) of each variant of our models
    variants = [("eager", None), (args.compile_backend, args.compile_backend)] if args.compile else [(None, None)]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("tools/benchmark.py: --device cuda, but torch.cuda.is_available() is False")
    if args.dtype == "fp16" and device.type != "cuda":
        raise SystemExit("tools/benchmark.py: --dtype fp16 needs CUDA; use bf16 on CPU")
    if "triton" in kernel_choices and device.type != "cuda":
        from backbones.kernels import interpreter_enabled

        if not interpreter_enabled():
            raise SystemExit("tools/benchmark.py: --kernels triton needs --device cuda (on CPU tensors Triton runs "
                             "only under its interpreter, TRITON_INTERPRET=1, which is for tests, not timings)")
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    if args.fuse and "train" in modes:
        raise SystemExit("tools/benchmark.py: --fuse folds BatchNorm for inference; use --mode infer")

    # (model name, impl label, builder) for every implementation to time
    impls: list[tuple[str, str, Callable[[], nn.Module], str | None, str | None]] = []
    for name in args.models:
        ours_label = "ours" if name.split(".")[0] in backbones.list_models() else "timm"
        for kernels in kernel_choices:
            for suffix, backend in variants:
                label = ours_label if len(kernel_choices) == 1 else f"{ours_label}[{kernels}]"
                label = label if suffix is None else f"{label}[{suffix}]"
                build = lambda n=name: _build(n, args.model_kwargs, args.num_classes)  # noqa: E731
                impls.append((name, label, build, kernels, backend))
        if args.compare:
            try:
                build_ref, label = get_reference(name)
            except KeyError as e:
                raise SystemExit(f"tools/benchmark.py: {e.args[0]}") from None
            kwargs = dict(args.model_kwargs)
            if args.num_classes is not None:
                kwargs["num_classes"] = args.num_classes
            impls.append((name, label, lambda b=build_ref, kw=kwargs, n=name, lb=label: _build_reference(b, kw, n, lb),
                          kernel_choices[0], None))

    rows: list[dict[str, Any]] = []
    per_model = len(kernel_choices) * len(variants) + (1 if args.compare else 0)
    compile_calls = len(args.models) * len(modes) if args.compile else 0
    total = len(args.models) * len(modes) * (args.warmup + args.repeats + 1) * per_model + compile_calls
    bar = tqdm(total=total, desc="benchmark", disable=args.no_progress or None, dynamic_ncols=True)
    for name in args.models:
        models = []  # (label, model, params, gmacs, kernels, compile backend); ours first
        x = None
        for n, label, build, kernels, backend in impls:
            if n != name:
                continue
            torch.manual_seed(0)
            model = build().to(device)
            if args.fuse:
                from timm.models import reparameterize_model

                model = reparameterize_model(model.eval(), inplace=True)
                label = f"{label}+fused"
            if x is None:  # the reference gets our input
                x = torch.randn(args.batch_size, args.in_chans, *_input_size(model, args), device=device)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            with _kernels_env(kernels):
                gmacs = count_gmacs(model, x, args.flops)
            models.append((label, model, params, gmacs, kernels, backend))
        for mode in modes:
            runners, compile_s = [], {}
            for label, model, params, gmacs, kernels, backend in models:
                compiled = None
                if backend is not None:  # a fresh compile per mode: the train and eval graphs differ
                    torch._dynamo.reset()
                    compiled = torch.compile(model, backend=backend, mode=args.compile_mode, fullgraph=args.fullgraph)
                runner = _Runner(model, mode, x, args.dtype, _num_classes(model), kernels, compiled=compiled)
                if compiled is not None:  # the first call compiles: timed apart, never among the repeats
                    compile_s[label] = round(runner.time_one(), 2)
                    bar.update(1)
                runners.append((label, runner, params, gmacs))
            for _ in range(args.warmup):
                for _label, runner, *_ in runners:
                    runner.step()
                bar.update(len(runners))
            times: dict[str, list[float]] = {label: [] for label, *_ in runners}
            for r in range(args.repeats):
                order = runners if r % 2 == 0 else runners[::-1]  # interleave, alternating who goes first
                for label, runner, *_ in order:
                    times[label].append(runner.time_one())
                bar.update(len(runners))
            for label, runner, params, gmacs in runners:
                median = statistics.median(times[label])
                rows.append(dict(
                    model=name, impl=label, mode=mode, device=str(device), dtype=args.dtype,
                    batch_size=args.batch_size, input_size=f"{x.shape[2]}x{x.shape[3]}", params_m=round(params, 4),
                    gmacs=None if gmacs is None else round(gmacs, 4),
                    flops_counter=None if gmacs is None else args.flops,
                    img_per_s=round(args.batch_size / median, 2), ms_per_iter=round(1000 * median, 3),
                    peak_mem_mb=round(runner.peak_mb(), 2), ratio=None, repeats=args.repeats,
                    kernels=kernels_used(runner.model), compile_s=compile_s.get(label),
                ))
                bar.update(1)
            if len(kernel_choices) > 1 or args.compile:  # the first is the baseline: its time / each other's
                group = rows[-len(runners):]
                for row in group[1:]:
                    row["ratio"] = round(group[0]["ms_per_iter"] / row["ms_per_iter"], 3)
            elif len(runners) == 2:  # ours vs reference: reference time / our time
                ours, ref = rows[-2], rows[-1]
                ours["ratio"] = round(ref["ms_per_iter"] / ours["ms_per_iter"], 3)
        del models, runners
    bar.close()
    return rows


# ---------------------------------------------------------------------------------------------------------------
# output


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = [("model", "model"), ("impl", "impl"), ("mode", "mode"), ("input_size", "input"), ("params_m", "params(M)"),
            ("gmacs", "GMACs"), ("img_per_s", "img/s"), ("ms_per_iter", "ms/iter"), ("peak_mem_mb", "peak MB"),
            ("ratio", "ratio"), ("kernels", "kernels")]
    if any(r.get("compile_s") is not None for r in rows):
        cols.append(("compile_s", "compile s"))
    cells = [[h for _, h in cols]] + [["" if r.get(k) is None else str(r[k]) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Grouped bars of img/s: one group per (model, mode), one bar per implementation, the ratio above ours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys((r["model"], r["mode"]) for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) * max(1, len(impls))), 4.2), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(impls)
    for j, impl in enumerate(impls):
        xs, ys = [], []
        for i, g in enumerate(groups):
            row = next((r for r in rows if (r["model"], r["mode"]) == g and r["impl"] == impl), None)
            if row is not None:
                xs.append(i + (j - (len(impls) - 1) / 2) * width)
                ys.append(row["img_per_s"])
                if row["ratio"] is not None:
                    ax.annotate(f"x{row['ratio']:.2f}", (xs[-1], ys[-1]), ha="center", va="bottom", fontsize=8)
        ax.bar(xs, ys, width=width, label=impl)
    ax.set_xticks(range(len(groups)), [f"{m}\n{mode}" for m, mode in groups], fontsize=8)
    values = [r["img_per_s"] for r in rows if r["img_per_s"] > 0]
    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
    ax.set_ylabel("images / s (median)")
    ax.set_title(title or "throughput")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    rows = run(args)
    print(format_table(rows))
    counter = {"torch": "torch.utils.flop_counter", "fvcore": "fvcore", "none": "not counted"}[args.flops]
    print(
        f"\n{args.device}, {args.dtype}, batch {args.batch_size}, median of {args.repeats} after {args.warmup} "
        "warm-up; "
        f"GMACs per image ({counter}); peak MB = tensor memory allocated during one iteration"
        + ("; ratio = reference ms / our ms (> 1: ours faster)" if args.compare else "")
        + (f"; ratio = {args.kernels[0]} ms / this row's ms (> 1: faster than {args.kernels[0]})"
           if args.kernels and len(args.kernels) > 1 else "")
        + ("; +fused: timm.models.reparameterize_model applied first" if args.fuse else "")
        + (f"; ratio = eager ms / torch.compile({args.compile_backend}) ms (> 1: compiled faster), compile_s = the "
           "first (compiling) call" if args.compile else "")
    )
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        title = f"{args.device} {args.dtype}, batch {args.batch_size}"
        plot(rows, args.plot, title=title)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()
