#!/usr/bin/env python3
"""Export a model to ONNX or to a ``torch.export`` program (.pt2), and check the file against eager mode.

    python tools/export.py efficientvit_m0 --format onnx --dynamic --check
    python tools/export.py davit_tiny --format pt2 --dynamic --check --out davit_tiny.pt2
    python tools/export.py focalnet_tiny_srf --format onnx --img-size 256 --pretrained --out focalnet.onnx
    python tools/export.py halonet_h0 --format pt2 --model-kwargs '{"num_classes": 10}' --check

Any timm name works (``import backbones`` registers ours). The model is built in eval mode (``--pretrained`` or
``--checkpoint`` for weights), traced at the example size (``--img-size`` / ``--input-size``, default the model's)
and written:

* ``--format onnx``: ``torch.onnx.export`` with the pinned torch's default exporter (``torch.export`` capture,
  then translation to ONNX; ``--opset`` to pick the opset);
* ``--format pt2``: ``torch.export.export`` then ``torch.export.save``. A program that holds the Triton kernels'
  custom operators (``--kernels triton``, or ``auto`` on CUDA) needs ``backbones.kernels.register_ops()`` before
  ``torch.export.load``.

``--dynamic`` makes the height and width symbolic (``torch.export.Dim.DYNAMIC``), so one file serves every input
size; the batch size stays the example's (``--batch-size``). ``--check`` runs the file (onnxruntime for ONNX, the
loaded program for pt2) against the eager model on the same random images: at the example size, and with
``--dynamic`` also at ``--check-size`` (default: the example size minus 27 rows plus 29 columns, 197x253 for 224,
an odd size that exercises padding). It prints the largest absolute difference, that difference relative to the
largest eager output (the check fails, exit status 1, above ``--tolerance``, default 1e-4) and the median latency of
both (``--repeats`` interleaved runs each). ``--csv`` writes those rows. A size the file does not serve -- outside
the ranges the capture settled on, or breaking a condition the model's code imposed on the sizes while tracing
(a map side divisible by a window, say) -- is a clear error that names the condition.

Both formats start from one ``torch.export.export`` capture: its runtime assertions name such a condition, which
an ONNX graph does not carry (onnxruntime would only fail somewhere inside, or return wrong numbers).

The sparse mixers run their PyTorch paths by default for ONNX (``--kernels torch``: a Triton kernel has no ONNX
form) and follow ``BACKBONES_KERNELS`` for pt2. When something cannot be exported, the error names the operator (or
the source line) that stopped it and the model's family; ``--traceback`` shows the full error.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECK_FIELDS = ["model", "format", "input_size", "max_abs_diff", "rel_diff", "eager_ms", "exported_ms", "speedup"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/export.py", description=__doc__.split("\n")[0])
    p.add_argument("model", help="model name (timm's, or this repository's)")
    p.add_argument("--format", choices=["onnx", "pt2"], required=True)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", type=int, default=None, help="square example side (default: the model's)")
    size.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--check-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="second size checked with --dynamic (default: H - 27, W + 29)")
    p.add_argument("--batch-size", "-b", type=int, default=1)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--dynamic", action="store_true", help="symbolic height and width (one file for every size)")
    p.add_argument("--check", action="store_true", help="compare the file with eager mode and time both")
    p.add_argument("--out", default="", help="output file (default: MODEL.onnx / MODEL.pt2)")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict of constructor arguments")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="load the model's default pretrained weights")
    weights.add_argument("--checkpoint", default="", help="load this checkpoint (timm.models.load_checkpoint)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--kernels", choices=["auto", "torch", "triton"], default=None,
                   help="BACKBONES_KERNELS while exporting (default: torch for onnx, the environment's for pt2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest max|diff| / max|eager output| accepted")
    p.add_argument("--repeats", type=int, default=10, help="timed runs of each for the latency (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default="", help="write the check rows here")
    p.add_argument("--traceback", action="store_true", help="print the full error when the export fails")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not isinstance(args.model_kwargs, dict):
        p.error("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    if args.batch_size < 1 or args.repeats < 1:
        p.error("--batch-size and --repeats must be >= 1")
    if args.check_size and not args.dynamic:
        p.error("--check-size needs --dynamic (a static file serves its example size only)")
    return args


class ExportFailure(Exception):
    """The model could not be exported; the message names the operator or source line and the family."""


# ---------------------------------------------------------------------------------------------------------------
# model


def _build(name: str, args: argparse.Namespace) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".")[0]):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise SystemExit(f"tools/export.py: unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                         else ""))
    model = timm.create_model(name, pretrained=args.pretrained, **args.model_kwargs)
    if args.checkpoint:
        from timm.models import load_checkpoint

        load_checkpoint(model, args.checkpoint)
    return model


def family(model: nn.Module) -> str:
    """The family a model belongs to: its module in backbones.models or timm.models, else its class's module."""
    module = type(model).__module__
    for prefix, label in (("backbones.models.", ""), ("timm.models.", "timm ")):
        if module.startswith(prefix):
            return label + module[len(prefix):].split(".")[0].lstrip("_")
    return module


def _example_size(model: nn.Module, args: argparse.Namespace) -> tuple[int, int]:
    if args.input_size:
        return tuple(args.input_size)
    if args.img_size:
        return args.img_size, args.img_size
    cfg_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(cfg_size[-2]), int(cfg_size[-1])


@contextlib.contextmanager
def _kernels_env(kernels: str | None) -> Iterator[None]:
    saved = os.environ.get("BACKBONES_KERNELS")
    if kernels is not None:
        os.environ["BACKBONES_KERNELS"] = kernels
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("BACKBONES_KERNELS", None)
        else:
            os.environ["BACKBONES_KERNELS"] = saved


# ---------------------------------------------------------------------------------------------------------------
# export


def _dynamic_shapes(dynamic: bool) -> tuple[dict[int, Any]] | None:
    if not dynamic:
        return None
    return ({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


_OP_PATTERNS = (
    re.compile(r"OpOverload\(op='(\w+)\.(\w+)', overload='\w+'\)"),  # ONNX: no function for an op
    re.compile(r"target=torch\.ops\.(\w+)\.(\w+)"),  # ONNX: the node that failed to translate
    re.compile(r"torch\.ops\.(\w+)\.(\w+)"),
    re.compile(r"\b(\w+)::(\w+)\b"),
)


def failing_operator(exc: BaseException) -> str | None:
    """The operator an export error is about (``namespace::name``), when its messages name one."""
    texts = [str(e) for e in _causes(exc)]
    for pattern in _OP_PATTERNS:
        for text in reversed(texts):  # the innermost error is the most specific
            m = pattern.search(text)
            if m:
                return f"{m.group(1)}::{m.group(2)}"
    return None


def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _user_frame(exc: BaseException) -> str | None:
    """The first source line of the model that the error points at (torch.export's 'from user code' or the traceback
    frame closest to the failure inside backbones / timm)."""
    for e in _causes(exc):
        m = re.search(r'from user code:\s*File "([^"]+)", line (\d+), in (\w+)\s*\n\s*(.+)', str(e))
        if m:
            return f"{_short(m.group(1))}:{m.group(2)} in {m.group(3)}: {m.group(4).strip()}"
    frames = [f for e in _causes(exc) for f in traceback.extract_tb(e.__traceback__)]
    ours = [f for f in frames if "/backbones/" in f.filename or "/timm/models/" in f.filename]
    if ours:
        f = ours[-1]
        return f"{_short(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
    return None


def size_ranges(program: Any) -> dict[str, tuple[int, int | None]]:
    """{"H": (lowest, highest), "W": ...} the exported program accepts for the input's height and width (None: no
    upper bound); a bound tighter than every size means the model's code specialised that dimension."""
    import sympy

    ranges: dict[str, tuple[int, int | None]] = {}
    image = program.graph_signature.user_inputs[0]  # not a parameter, buffer or lifted constant (RAVLT has those)
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == image)
    shape = placeholder.meta["val"].shape
    for label, dim in (("H", shape[2]), ("W", shape[3])):
        if isinstance(dim, int):
            ranges[label] = (dim, dim)
            continue
        expr = dim.node.expr
        vr = program.range_constraints.get(expr)
        if vr is None:
            ranges[label] = (0, None)
            continue
        upper = None if vr.upper in (sympy.oo, int(sys.maxsize)) or vr.upper > 2**31 else int(vr.upper)
        ranges[label] = (int(vr.lower), upper)
    return ranges


def _ranges_text(ranges: dict[str, tuple[int, int | None]]) -> str:
    return ", ".join(f"{k} {lo}" + ("+" if hi is None else f"..{hi}" if hi != lo else "") for k, (lo, hi) in
                     ranges.items())


def _describe_failure(exc: BaseException, name: str, model: nn.Module, fmt: str, stage: str) -> str:
    op = failing_operator(exc)
    where = _user_frame(exc)
    inner = list(_causes(exc))[-1]
    first = next((line.strip() for line in str(inner).splitlines() if line.strip()), type(inner).__name__)
    what = f"operator {op}" if op else "the model's code"
    lines = [f"tools/export.py: {name} (family {family(model)}) cannot be exported to {fmt}: {what} failed in {stage}"]
    if where:
        lines.append(f"  at {where}")
    lines.append(f"  {type(inner).__name__}: {first[:500]}")
    if fmt == "onnx" and op and not op.startswith("aten::"):
        lines.append(f"  {op} has no ONNX translation: try --kernels torch, or register one with "
                     "torch.onnx.export(custom_translation_table=...)")
    return "\n".join(lines)


def export(model: nn.Module, x: torch.Tensor, args: argparse.Namespace, out: Path) -> tuple[str, Any]:
    """Write the file; returns (a one-line description, the exported program).

    Both formats start from one ``torch.export.export`` (non-strict) capture: a model whose code cannot keep the
    sizes symbolic fails here with the source line that specialised them, and the program's runtime assertions
    (conditions on the sizes, which the ONNX graph does not carry) serve the checks of both formats."""
    try:
        with warnings_quiet(), _size_oblivious(args.dynamic):
            program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(args.dynamic))
    except Exception as e:
        raise ExportFailure(_describe_failure(e, args.model, model, args.format, "torch.export")) from e
    if args.format == "pt2":
        torch.export.save(program, str(out))
        custom = sorted({str(n.target).rsplit(".", 1)[0] for n in program.graph.nodes
                         if str(n.target).startswith("backbones.")})
        note = f"; holds {', '.join(custom)}: call backbones.kernels.register_ops() before loading" if custom else ""
        return f"torch.export program{note}", program
    try:
        with warnings_quiet():
            onnx_program = torch.onnx.export(program, (x,), str(out), dynamo=True, opset_version=args.opset,
                                             input_names=["image"], output_names=["output"], verbose=False,
                                             custom_translation_table=custom_translation_table())
    except Exception as e:
        raise ExportFailure(_describe_failure(e, args.model, model, "onnx", "the ONNX translation")) from e
    opset = next((o.version for o in onnx_program.model_proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return f"ONNX, opset {opset}", program


def custom_translation_table() -> dict[Any, Any]:
    """This repository's ONNX translations (torchvision::deform_conv2d, aten::sort.stable): backbones.onnx_ops."""
    from backbones.onnx_ops import custom_translation_table as table

    return table()


def _size_oblivious(dynamic: bool) -> contextlib.AbstractContextManager:
    """With --dynamic: a map side that is 1 at the example size (a one-window last stage) does not specialise the
    program (torch's backed_size_oblivious)."""
    if not dynamic:
        return contextlib.nullcontext()
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(backed_size_oblivious=True)


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def file_size_mb(out: Path) -> float:
    """The file's size, with an ONNX external-data file next to it if the exporter wrote one."""
    paths = [out] + [p for p in out.parent.glob(out.name + ".data")]
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# check


def _runner(args: argparse.Namespace, out: Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported file as a function of an image batch, loaded back from disk."""
    if args.format == "pt2":
        with contextlib.suppress(RuntimeError):  # programs with the kernels' custom ops need them registered
            from backbones.kernels import register_ops

            register_ops()
        module = torch.export.load(str(out)).module()

        def run_pt2(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(x)

        return run_pt2
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # as many threads as torch, and no busy-waiting between runs: onnxruntime's spinning threads would otherwise
    # steal the cores from the interleaved eager runs
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors reach the caller as exceptions, not as log lines
    session = ort.InferenceSession(str(out), options, providers=providers)
    input_name = session.get_inputs()[0].name

    def run_onnx(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.detach().cpu().numpy()})[0])

    return run_onnx


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def check(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, args: argparse.Namespace
          ) -> dict[str, Any]:
    """Max |diff| (absolute and relative to the largest eager output) and interleaved median latencies at x's size."""
    device = x.device

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    ref, got = eager(), run(x)
    if tuple(got.shape) != tuple(ref.shape):
        raise ExportFailure(f"tools/export.py: the exported {args.format} gives shape {tuple(got.shape)} at "
                            f"{x.shape[2]}x{x.shape[3]}, eager {tuple(ref.shape)}")
    diff = (got.float().cpu() - ref.float().cpu()).abs().max().item()
    scale = ref.float().abs().max().item()
    times: dict[str, list[float]] = {"eager": [], "exported": []}
    for r in range(args.repeats):
        order = [("eager", eager), ("exported", lambda: run(x))]
        for label, fn in order if r % 2 == 0 else order[::-1]:  # interleaved, alternating who goes first
            times[label].append(_timed(fn, device))
    eager_ms = 1000 * statistics.median(times["eager"])
    exported_ms = 1000 * statistics.median(times["exported"])
    return dict(model=args.model, format=args.format, input_size=f"{x.shape[2]}x{x.shape[3]}",
                max_abs_diff=diff, rel_diff=diff / max(scale, 1e-12), eager_ms=round(eager_ms, 3),
                exported_ms=round(exported_ms, 3), speedup=round(eager_ms / exported_ms, 3))


def _check_in_range(ranges: dict[str, tuple[int, int | None]], hw: tuple[int, int], args: argparse.Namespace,
                    model: nn.Module) -> None:
    for (label, (lo, hi)), size in zip(ranges.items(), hw):
        if size < lo or (hi is not None and size > hi):
            raise ExportFailure(
                f"tools/export.py: the {args.format} export of {args.model} (family {family(model)}) accepts "
                f"{_ranges_text(ranges)} only, not {label} = {size}: the model's code specialised that dimension "
                "while tracing (TORCH_LOGS=+dynamic shows where)"
            )


def _check_size_conditions(program: Any, x: torch.Tensor, args: argparse.Namespace, model: nn.Module) -> None:
    """Run the exported program once at x's size: its runtime assertions name any condition on the sizes that the
    model's code imposed while tracing (e.g. a map side divisible by a window), which the ranges do not show."""
    try:
        with torch.no_grad():
            program.module()(x)
    except AssertionError as e:
        condition = str(e).strip().splitlines()[-1].replace("Guard failed: ", "")
        raise ExportFailure(
            f"tools/export.py: the {args.format} export of {args.model} (family {family(model)}) does not serve "
            f"{x.shape[2]}x{x.shape[3]}: the model's code fixed the condition {condition} on the input size while "
            "tracing (x.size()[2] is H, [3] W); TORCH_LOGS=+dynamic shows where"
        ) from e


def format_checks(rows: list[dict[str, Any]], runtime: str) -> str:
    cols = [("input_size", "input"), ("max_abs_diff", "max|diff|"), ("rel_diff", "rel diff"), ("eager_ms", "eager ms"),
            ("exported_ms", f"{runtime} ms"), ("speedup", "speed-up")]

    def cell(key: str, value: Any) -> str:
        return f"{value:.2e}" if key in ("max_abs_diff", "rel_diff") else str(value)

    cells = [[h for _, h in cols]] + [[cell(k, r[k]) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    import backbones  # noqa: F401  (registers the models)

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    device = torch.device(args.device)
    kernels = args.kernels or ("torch" if args.format == "onnx" else None)
    out = Path(args.out or f"{args.model.replace('/', '_')}.{args.format}")
    out.parent.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    model = _build(args.model, args).to(device).eval()
    hw = _example_size(model, args)
    sizes = [hw]
    if args.check and args.dynamic:
        sizes.append(tuple(args.check_size) if args.check_size else (max(hw[0] - 27, 1), hw[1] + 29))
    steps = 1 + (len(sizes) if args.check else 0)
    bar = tqdm(total=steps, desc=f"export {args.model}", disable=args.no_progress or None, dynamic_ncols=True,
               file=sys.stderr)
    generator = torch.Generator().manual_seed(args.seed)

    def images(h: int, w: int) -> torch.Tensor:
        return torch.randn(args.batch_size, args.in_chans, h, w, generator=generator).to(device)

    with _kernels_env(kernels):
        try:
            bar.set_postfix_str(f"{args.format}, {hw[0]}x{hw[1]}" + (", dynamic H/W" if args.dynamic else ""))
            start = time.perf_counter()
            kind, program = export(model, images(*hw), args, out)
            seconds = time.perf_counter() - start
            bar.update(1)
            ranges = None
            if args.dynamic:
                ranges = size_ranges(program)
                kind += f"; accepts {_ranges_text(ranges)}"
            rows = []
            if args.check:
                run = _runner(args, out, device)
                for h, w in sizes:
                    bar.set_postfix_str(f"check {h}x{w}")
                    if ranges is not None:
                        _check_in_range(ranges, (h, w), args, model)
                    if (h, w) != hw:
                        _check_size_conditions(program, images(h, w), args, model)
                    try:
                        rows.append(check(model, run, images(h, w), args))
                    except ExportFailure:
                        raise
                    except Exception as e:
                        raise ExportFailure(f"tools/export.py: the exported {args.format} of {args.model} (family "
                                            f"{family(model)}) fails at {h}x{w}: {type(e).__name__}: "
                                            f"{str(e).strip().splitlines()[-1][:300]}") from e
                    bar.update(1)
        except ExportFailure as e:
            bar.close()
            if args.traceback:
                traceback.print_exception(e.__cause__ or e)
            raise SystemExit(str(e)) from None
    bar.close()

    size_mb = file_size_mb(out)
    print(f"wrote {out} ({size_mb:.2f} MB, {kind}; {args.model}, family {family(model)}, example {hw[0]}x{hw[1]}"
          f"{', dynamic H/W' if args.dynamic else ''}; exported in {seconds:.1f} s)")
    result = dict(file=str(out), size_mb=size_mb, kind=kind, checks=rows)
    if rows:
        runtime = "onnxruntime" if args.format == "onnx" else "exported"
        print(format_checks(rows, runtime))
        print(f"\nmedian of {args.repeats} interleaved runs, batch {args.batch_size}, {device}; rel diff = max|diff| / "
              f"max|eager output| (tolerance {args.tolerance:g})")
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CHECK_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            print(f"wrote {args.csv}")
        bad = [r for r in rows if not r["rel_diff"] <= args.tolerance]
        if bad:
            sizes_txt = ", ".join(f"{r['input_size']} ({r['rel_diff']:.2e})" for r in bad)
            print(f"tools/export.py: {args.model}: the exported {args.format} differs from eager above "
                  f"{args.tolerance:g} at {sizes_txt}", file=sys.stderr)
            raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
