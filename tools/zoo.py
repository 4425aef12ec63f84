#!/usr/bin/env python3
"""Regenerate the zoo page (docs/zoo.md) and its plot: published top-1 against measured throughput on this machine.

    python tools/zoo.py                                  # every model with weights: measure, write docs/zoo.*
    python tools/zoo.py --models 'efficientvit_*' 'davit_tiny' --out-dir /tmp/zoo
    python tools/zoo.py --from-csv docs/zoo.csv          # redraw the page from an earlier measurement
    python tools/zoo.py --no-measure                     # published numbers and counts only (plot against GMACs)
    python tools/zoo.py --resume --time-budget 90        # go on from docs/zoo.csv; stop starting models after 90 min

One point per model that has published ImageNet-1k weights and a published top-1 (``tools/model_table.py`` lists
the figures and their sources): top-1 against images / s on this machine's CPU, batch 8 (``--batch-size``), at the
model's default input size, marker area proportional to the parameter count, one colour per family. Each model is
timed eager and under ``torch.compile`` (``--compile-backend``, default inductor) in one interleaved run of
``tools/benchmark.py --compile`` (``--repeats`` timed after ``--warmup``, median); the point sits at the compiled
throughput, a line leads back to the eager one. A model that fails to compile keeps its eager figure (the page says
so). Parameters and GMACs are counted as ``tools/model_table.py`` counts them (meta device).

Writes ``docs/zoo.md``, ``docs/zoo.png`` and the measurements as ``docs/zoo.csv`` (``--out-dir`` elsewhere). The
full measurement takes hours on a small CPU (each compile is minutes): a progress bar shows the model under way,
and the CSV is rewritten after every model, so an interrupted run loses one model at most. ``--resume`` starts from
that CSV: a model already measured there with the same batch size, repeats and backend keeps its row and is not
timed again, the others are measured, and rows of models outside ``--models`` are kept, so the page can be built
over several runs (``--time-budget`` stops starting new models after that many minutes; the page then shows
``-`` for the rest). The compile time of each model (its first, compiling call) is in the CSV as ``compile_s``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fnmatch
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchmark  # noqa: E402  (tools/benchmark.py)
import model_table  # noqa: E402  (tools/model_table.py: published top-1 and the counts)

FIELDS = ["model", "family", "input_size", "params_m", "gmacs", "top1", "weights", "eager_img_s", "compiled_img_s",
          "speedup", "compile_s", "note", "measured_on", "setting"]
NUMERIC = {"params_m", "gmacs", "top1", "eager_img_s", "compiled_img_s", "speedup", "compile_s"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/zoo.py", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["*"], help="name patterns (fnmatch) restricting the models")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from-csv", default="", help="take the measurements from this zoo CSV (no timing)")
    source.add_argument("--no-measure", action="store_true", help="no timing: plot top-1 against GMACs")
    p.add_argument("--out-dir", default="docs", help="where zoo.md, zoo.png and zoo.csv go")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of OUT_DIR/zoo.csv measured with these settings; measure only the others")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="start no new model after MIN minutes (the rest stay unmeasured; --resume goes on later)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("--batch-size and --repeats must be >= 1, --warmup >= 0")
    if args.time_budget is not None and args.time_budget <= 0:
        p.error(f"--time-budget must be > 0 minutes, got {args.time_budget}")
    if (args.resume or args.time_budget) and (args.from_csv or args.no_measure):
        p.error("--resume and --time-budget apply to a measuring run, not to --from-csv or --no-measure")
    return args


def setting(args: argparse.Namespace) -> str:
    """What makes two measurements comparable: batch size, repeats, warm-up, backend and threads."""
    return (f"batch {args.batch_size}, {args.repeats} repeats after {args.warmup} warm-up, {args.compile_backend}, "
            f"{torch.get_num_threads()} threads")


def zoo_models(patterns: Sequence[str]) -> list[str]:
    """Models of this repository with published weights and a published ImageNet-1k top-1, matching a pattern."""
    import timm

    import backbones

    names = [n for n in backbones.list_models() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return [n for n in names if n in model_table.PUBLISHED_TOP1 and timm.list_pretrained(f"{n}.*")]


def family(name: str) -> str:
    """The module that registers ``name`` (biformer, halonet, ...), as timm's registry records it."""
    from timm.models import _registry

    module = _registry._model_to_module.get(name, "")
    return module.rsplit(".", 1)[-1].lstrip("_") or name.split("_")[0]


def describe(name: str) -> dict[str, Any]:
    """The row of ``name`` without measurements."""
    import timm

    params, gmacs, hw = model_table.count(name)
    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
    return dict(model=name, family=family(name), input_size=f"{hw[0]}x{hw[1]}", params_m=round(params / 1e6, 2),
                gmacs=round(gmacs, 2), top1=model_table.PUBLISHED_TOP1[name][0], weights=", ".join(tags),
                eager_img_s=None, compiled_img_s=None, speedup=None, compile_s=None, note="", measured_on="",
                setting="")


def measure(row: dict[str, Any], args: argparse.Namespace) -> None:
    """Eager and compiled img/s of one model (tools/benchmark.py --compile, interleaved), into ``row``."""
    h, w = row["input_size"].split("x")
    common = [row["model"], "--batch-size", str(args.batch_size), "--input-size", h, w, "--mode", "infer",
              "--flops", "none", "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--no-progress",
              "--device", "cpu"]
    try:
        rows = benchmark.run(benchmark.parse_args(common + ["--compile", "--compile-backend", args.compile_backend]))
    except Exception as e:  # noqa: BLE001  (one model that does not compile must not stop the page)
        row["note"] = f"torch.compile failed ({type(e).__name__}); eager only"
        rows = benchmark.run(benchmark.parse_args(common))
        row["eager_img_s"] = rows[0]["img_per_s"]
        return
    row["eager_img_s"], row["compiled_img_s"] = rows[0]["img_per_s"], rows[1]["img_per_s"]
    row["speedup"] = rows[1]["ratio"]
    row["compile_s"] = rows[1].get("compile_s")


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a zoo CSV; numbers as floats, empty cells as None; columns an older CSV lacks are empty."""

    def value(key: str, text: str | None) -> Any:
        if key in NUMERIC:
            return None if text in (None, "", "None") else float(text)
        return text or ""

    with open(path, newline="") as f:
        return [{k: value(k, r.get(k)) for k in FIELDS} for r in csv.DictReader(f)]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _throughput(row: dict[str, Any]) -> float | None:
    return row["compiled_img_s"] or row["eager_img_s"]


def _scatter(ax: Any, rows: list[dict[str, Any]], measured: bool, colours: dict[str, str], biggest: float,
             labelled: set[str]) -> None:
    """One panel: a point per row (marker area ~ parameters, colour = family), names on the ``labelled`` rows."""
    for fam, colour in colours.items():
        group = [r for r in rows if r["family"] == fam]
        if not group:
            continue
        xs = [_throughput(r) if measured else r["gmacs"] for r in group]
        ys = [r["top1"] for r in group]
        sizes = [30 + 900 * r["params_m"] / biggest for r in group]
        ax.scatter(xs, ys, s=sizes, color=colour, alpha=0.6, edgecolors="black", linewidths=0.5, label=fam)
        for r, x, y in zip(group, xs, ys):
            if measured and r["compiled_img_s"] and r["eager_img_s"]:  # back to the eager throughput
                ax.plot([r["eager_img_s"], x], [y, y], color=colour, linewidth=1, alpha=0.7)
                ax.plot([r["eager_img_s"]], [y], marker="|", color=colour, markersize=8)
            if r["model"] in labelled:
                ax.annotate(r["model"], (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("images / s, CPU (compiled; line: eager)" if measured else "GMACs per image")
    ax.grid(alpha=0.3, which="both")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Top-1 against img/s (or GMACs when nothing was measured), marker area ~ parameters, colour = family.

    With many points a second panel enlarges the upper two thirds by top-1 (where most models crowd) and names them
    there; the first panel names the rest and marks the enlarged region."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FormatStrFormatter

    measured = any(_throughput(r) for r in rows)
    shown = [r for r in rows if (_throughput(r) if measured else r["gmacs"])]
    families = list(dict.fromkeys(r["family"] for r in rows))
    colours = {f: f"C{i % 10}" for i, f in enumerate(families)}
    biggest = max(r["params_m"] for r in rows)
    top1s = sorted(r["top1"] for r in shown)
    crowd = [r for r in shown if r["top1"] >= top1s[len(top1s) // 3]] if len(shown) >= 12 else []
    fig = Figure(figsize=(15.0, 6.5) if crowd else (10.5, 6.0), tight_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, width_ratios=(1, 1.4)) if crowd else [fig.subplots()]
    crowd_names = {r["model"] for r in crowd}
    _scatter(axes[0], shown, measured, colours, biggest, {r["model"] for r in shown} - crowd_names)
    axes[0].set_ylabel("ImageNet-1k top-1 (published), %")
    axes[0].set_title(title, fontsize=9)
    if crowd:
        xs = [x for r in crowd for x in ((_throughput(r), r["eager_img_s"]) if measured else (r["gmacs"],)) if x]
        ys = [r["top1"] for r in crowd]
        x0, x1, y0, y1 = min(xs) / 1.15, max(xs) * 1.15, min(ys) - 0.3, max(ys) + 0.3
        axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", linewidth=0.8))
        _scatter(axes[1], crowd, measured, colours, biggest, crowd_names)
        axes[1].set_xlim(x0, x1)
        axes[1].set_ylim(y0, y1)
        axes[1].xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes[1].xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        axes[1].tick_params(axis="x", which="minor", labelsize=7)
        axes[1].set_title(f"enlarged: the dashed box (top-1 >= {min(ys):.1f}%)", fontsize=9)
    handles = {h.get_label(): h for ax in axes for h in ax.collections}
    legend = axes[-1].legend([handles[f] for f in families if f in handles], [f for f in families if f in handles],
                             fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="family",
                             title_fontsize=7)
    for handle in legend.legend_handles:  # one marker size in the legend (the plot's sizes are parameters)
        handle.set_sizes([40])
    fig.savefig(path, dpi=120)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value in (None, "") else fmt.format(value)


def page(rows: list[dict[str, Any]], args: argparse.Namespace, png_name: str, measured_on: str) -> str:
    measured = any(_throughput(r) for r in rows)
    lines = [
        "# Model zoo",
        "",
        "Every model of this repository with published ImageNet-1k weights: the published top-1 (sources in "
        "`tools/model_table.py`) against "
        + (f"throughput measured on {measured_on} (batch {args.batch_size}, the model's default input size, "
           f"inference, median of {args.repeats} after {args.warmup} warm-up, eager and "
           f"`torch.compile(backend=\"{args.compile_backend}\")` interleaved)."
           if measured else "GMACs per image (no throughput measured yet: run `python tools/zoo.py`)."),
        "Marker area is proportional to the parameter count. Regenerate with `python tools/zoo.py` (see its `--help`).",
        "",
        f"![top-1 against throughput]({png_name})",
        "",
        "| model | family | input | params (M) | GMACs | top-1 | img/s eager | img/s compiled | speed-up | weights |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["family"], r["params_m"])):
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"| `{r['model']}` | {r['family']} | {r['input_size']} | {r['params_m']:.2f} | {r['gmacs']:.2f} | "
            f"{r['top1']:.1f} | {_cell(r['eager_img_s'], '{:.1f}')} | {_cell(r['compiled_img_s'], '{:.1f}')}{note} | "
            f"{_cell(r['speedup'], 'x{:.2f}')} | {r['weights']} |"
        )
    return "\n".join(lines) + "\n"


def measure_all(names: list[str], args: argparse.Namespace, table: Path, measured_on: str) -> list[dict[str, Any]]:
    """Rows of ``names`` (and, with --resume, the other rows of ``table``), measuring what is not measured yet.

    ``table`` is rewritten after every model, so an interrupted run keeps what it had measured."""
    from tqdm import tqdm

    now = setting(args)
    kept: dict[str, dict[str, Any]] = {}
    if args.resume and table.is_file():
        kept = {r["model"]: r for r in read_csv(table)}
    rows = {name: describe(name) for name in names}
    for name, old in kept.items():  # same setting: keep the measurement; other models of the file: keep the row
        if name not in rows:
            rows[name] = old
        elif old["eager_img_s"] and old["setting"] == now:
            rows[name].update({k: old[k] for k in ("eager_img_s", "compiled_img_s", "speedup", "compile_s", "note",
                                                   "measured_on", "setting")})
    todo = [n for n in names if args.no_measure or not rows[n]["eager_img_s"]]
    if args.resume:
        print(f"tools/zoo.py: {len(names) - len(todo)} of {len(names)} models already measured in {table}",
              file=sys.stderr)
    ordered = lambda: sorted(rows.values(), key=lambda r: r["model"])  # noqa: E731
    start = time.monotonic()
    bar = tqdm(todo, desc="zoo", disable=args.no_progress or None, dynamic_ncols=True, file=sys.stderr)
    for i, name in enumerate(bar):
        if i and args.time_budget is not None and time.monotonic() - start > 60 * args.time_budget:
            tqdm.write(f"tools/zoo.py: --time-budget of {args.time_budget:g} min spent; stopping before {name}",
                       file=sys.stderr)
            break
        bar.set_postfix_str(name)
        if not args.no_measure:
            measure(rows[name], args)
            rows[name].update(measured_on=measured_on, setting=now)
            write_csv(ordered(), table)
    bar.close()
    return ordered()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measured_on = _machine()
    if args.from_csv:
        rows = [r for r in read_csv(args.from_csv) if any(fnmatch.fnmatchcase(r["model"], p) for p in args.models)]
        measured_on = next((r["measured_on"] for r in rows if r.get("measured_on")), f"the machine of {args.from_csv}")
    else:
        names = zoo_models(args.models)
        if not names:
            raise SystemExit(f"tools/zoo.py: no model with published weights and top-1 matches {args.models}")
        rows = measure_all(names, args, out_dir / "zoo.csv", measured_on)
    if not rows:
        raise SystemExit("tools/zoo.py: no rows to draw")
    png, md, table = out_dir / "zoo.png", out_dir / "zoo.md", out_dir / "zoo.csv"
    stamp = datetime.date.today().isoformat()
    measured = any(map(_throughput, rows))
    plot(rows, png, title=f"published top-1 vs CPU throughput ({measured_on}; {stamp})" if measured
         else f"published top-1 vs GMACs ({stamp})")
    md.write_text(page(rows, args, png.name, measured_on))
    if not args.from_csv:
        write_csv(rows, table)
    left = [r["model"] for r in rows if not args.no_measure and not r["eager_img_s"]]
    if left:
        print(f"tools/zoo.py: {len(left)} models not measured yet ({', '.join(left)}); "
              "`python tools/zoo.py --resume` measures them", file=sys.stderr)
    print(f"wrote {md}, {png}" + ("" if args.from_csv else f", {table}") + f" ({len(rows)} models)")
    return rows


if __name__ == "__main__":
    main()
