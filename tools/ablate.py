#!/usr/bin/env python3
"""Train a grid of hybrids (mixer variants x seeds) with one recipe; tabulate and plot top-1 against speed and size.

    python tools/ablate.py configs/cls/ablation/digits_smoke.yaml --output runs/ablate-smoke      # CPU, a few minutes
    python tools/ablate.py configs/cls/ablation/in100_mixers.yaml --output runs/in100 --nproc 8   # torchrun per run
    python tools/ablate.py GRID.yaml --output runs/x --only global,identity --seeds 0       # part of a grid

A grid file (YAML) names a ``tools/train.py`` recipe and what varies:

    recipe: ../digits_hybrid_smoke.yaml          # relative to the grid file; every run trains with it
    model: hybrid_tiny                           # default hybrid_tiny
    model_kwargs: {embed_dims: [16, 32, 48, 64], depths: [1, 1, 2, 1]}   # shared by every variant
    seeds: [0, 1]                                # every variant is trained once per seed (the recipe's seed key)
    overrides: [epochs=3]                        # recipe overrides for every run (tools/train.py key=value)
    budget: {reference: global, metric: params}  # optional: match_budget every variant to this one (knob, tol,
                                                 # img_size as backbones.models.budget.match_budget)
    throughput: {img_size: 224, batch_size: 32, repeats: 10, warmup: 3}   # img/s measurement after training
    variants:                                    # name -> model kwargs (mixers= and anything else)
      global: {mixers: global}
      identity: {mixers: identity}
      static_global: {mixers: "static | static | static+global | static+global"}

Each run trains in OUTPUT/<variant>/seed<k>/ through ``tools/train.py`` (in this process, or under
``torchrun --nproc_per_node N`` with ``--nproc N``), with the recipe's own data pipeline, schedule and checkpoints.
A finished run writes result.json there: its config, parameters, GMACs (torch counter, at the throughput size),
inference img/s (median over repeats, batch ``batch_size``, eval mode, on the training device), final and best
top-1 / top-5. Resume is the default: finished runs are skipped, a run with a last.pth.tar but no result.json
continues from it (tools/train.py's exact resume), and a finished run whose config (variant kwargs, seed, overrides,
or any value of the resolved recipe) has since changed is an error (use a new output folder). ``--fresh`` starts
every run over.

OUTPUT gets results.csv (one row per run), summary.csv (per variant: mean and std over seeds), ablation.png (top-1
against img/s and against parameters, one point per variant with its seed spread) and grid.yaml (the grid as run).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRID_KEYS = ("recipe", "model", "model_kwargs", "seeds", "overrides", "budget", "throughput", "variants")
THROUGHPUT_DEFAULTS = dict(img_size=224, batch_size=32, repeats=10, warmup=3)
RESULT_FIELDS = [
    "variant", "seed", "mixers", "params_m", "gmacs", "img_per_s", "top1", "top5", "best_top1", "eval_loss",
    "epochs", "train_time_s", "output",
]
SUMMARY_FIELDS = ["variant", "mixers", "seeds", "params_m", "gmacs", "img_per_s", "top1_mean", "top1_std",
                  "best_top1_mean", "best_top1_std"]


class GridError(ValueError):
    """A grid file that cannot be run."""


def _load_tool(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML- and JSON-safe, and comparable with what was read back)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# the grid


def load_grid(path: str) -> dict[str, Any]:
    """Read and check a grid file; ``recipe`` becomes an absolute path."""
    with open(path) as f:
        grid = yaml.safe_load(f) or {}
    if not isinstance(grid, dict):
        raise GridError(f"{path}: a grid is a YAML mapping, got {type(grid).__name__}")
    unknown = [k for k in grid if k not in GRID_KEYS]
    if unknown:
        raise GridError(f"{path}: unknown grid key(s) {unknown}; the keys are {', '.join(GRID_KEYS)}")
    for key in ("recipe", "variants"):
        if not grid.get(key):
            raise GridError(f"{path}: the grid needs {key!r}")
    recipe = Path(grid["recipe"])
    grid["recipe"] = str(recipe if recipe.is_absolute() else (Path(path).resolve().parent / recipe).resolve())
    if not os.path.isfile(grid["recipe"]):
        raise GridError(f"{path}: recipe {grid['recipe']} not found")
    if not isinstance(grid["variants"], dict) or not all(isinstance(v, dict) for v in grid["variants"].values()):
        raise GridError(f"{path}: variants maps a name to model kwargs, e.g. 'global: {{mixers: global}}'")
    grid.setdefault("model", "hybrid_tiny")
    grid.setdefault("model_kwargs", {})
    grid.setdefault("overrides", [])
    grid["seeds"] = [int(s) for s in grid.get("seeds", [0])]
    unknown = [k for k in grid.get("throughput", {}) if k not in THROUGHPUT_DEFAULTS]
    if unknown:
        raise GridError(f"{path}: unknown throughput key(s) {unknown}; the keys are {list(THROUGHPUT_DEFAULTS)}")
    grid["throughput"] = dict(THROUGHPUT_DEFAULTS, **grid.get("throughput", {}))
    return grid


def variant_kwargs(grid: dict[str, Any], recipe_kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Model kwargs per variant: recipe's, then the grid's shared ones, then the variant's; budget-matched if asked."""
    out = {name: dict(recipe_kwargs, **grid["model_kwargs"], **v) for name, v in grid["variants"].items()}
    budget = grid.get("budget")
    if budget:
        from backbones.models.budget import match_budget

        budget = dict(budget)
        ref = budget.pop("reference", None)
        if ref not in out:
            raise GridError(f"budget.reference must name a variant ({', '.join(out)}), got {ref!r}")
        for name in out:
            if name != ref:
                out[name] = match_budget(out[ref], out[name], model_name=grid["model"], **budget).kwargs
    return {name: _plain(kw) for name, kw in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# one run


def _train_argv(grid: dict[str, Any], kwargs: dict[str, Any], seed: int, out: Path, resume: bool) -> list[str]:
    model_kwargs = yaml.safe_dump(kwargs, default_flow_style=True, width=10**6).strip()
    argv = [grid["recipe"], "--output", str(out), "--set", f"model={grid['model']}",
            "--set", f"model_kwargs={model_kwargs}", "--set", f"seed={seed}"]
    for item in grid["overrides"]:
        argv += ["--set", str(item)]
    if resume:
        argv += ["--resume", "auto"]
    return argv


def measure_model(model_name: str, kwargs: dict[str, Any], num_classes: int, throughput: Mapping[str, Any],
                  device: torch.device) -> dict[str, float]:
    """Parameters (M), GMACs of one image and inference img/s of the architecture (weights do not matter)."""
    import timm

    bench = _load_tool("benchmark")
    model = timm.create_model(model_name, num_classes=num_classes, **kwargs).to(device).eval()
    size, batch = int(throughput["img_size"]), int(throughput["batch_size"])
    x = torch.randn(batch, model.in_chans, size, size, device=device)
    gmacs = bench.count_gmacs(model, x, "torch")
    runner = bench._Runner(model, "infer", x, "fp32", num_classes)
    for _ in range(int(throughput["warmup"])):
        runner.step()
    ms = statistics.median(runner.time_one() for _ in range(max(1, int(throughput["repeats"]))))
    return dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6, gmacs=gmacs, img_per_s=batch / ms)


def _read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_one(grid: dict[str, Any], name: str, kwargs: dict[str, Any], seed: int, out: Path, nproc: int,
            fresh: bool) -> dict[str, Any]:
    """Train (or resume) one variant / seed, measure it, write and return its result."""
    config = dict(model=grid["model"], model_kwargs=kwargs, seed=seed, recipe=grid["recipe"],
                  overrides=list(grid["overrides"]), throughput=grid["throughput"],
                  recipe_values=grid.get("recipe_values"))  # the resolved recipe: an edited recipe file shows
    result_path = out / "result.json"
    if fresh and out.exists():
        shutil.rmtree(out)
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done["config"] != _plain(config):
            raise GridError(
                f"{out} holds a finished run of another config (changed: "
                f"{sorted(k for k in config if _plain(config[k]) != done['config'].get(k))}); use a new --output "
                f"or --fresh"
            )
        return done
    out.mkdir(parents=True, exist_ok=True)
    argv = _train_argv(grid, kwargs, seed, out, resume=(out / "last.pth.tar").is_file())
    t0 = time.time()
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / "tools" / "train.py"), *argv]
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    else:
        _load_tool("train").main(argv)
    train_time = time.time() - t0
    rows = _read_metrics(out / "metrics.csv")
    with open(out / "config.yaml") as f:
        recipe = yaml.safe_load(f)
    device = torch.device("cuda" if recipe["device"] == "auto" and torch.cuda.is_available()
                          else "cpu" if recipe["device"] == "auto" else recipe["device"])
    num_classes = int(torch.load(out / "last.pth.tar", map_location="cpu", weights_only=False)["state_dict"][
        "head.fc.weight"].shape[0])
    figures = measure_model(grid["model"], kwargs, num_classes, grid["throughput"], device)
    last = rows[-1]
    result = dict(
        variant=name, seed=seed, mixers=json.dumps(kwargs.get("mixers")), **figures,
        top1=float(last["top1"]), top5=float(last["top5"]), best_top1=max(float(r["top1"]) for r in rows),
        eval_loss=float(last["eval_loss"]), epochs=len(rows), train_time_s=round(train_time, 1), output=str(out),
        config=_plain(config),
    )
    result_path.write_text(json.dumps(result, indent=1))
    return result


# ---------------------------------------------------------------------------------------------------------------
# tables and plot


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: the architecture's figures and the mean / std of top-1 over its seeds."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name]
        top1, best = [r["top1"] for r in runs], [r["best_top1"] for r in runs]
        out.append(dict(
            variant=name, mixers=runs[0]["mixers"], seeds=len(runs), params_m=runs[0]["params_m"],
            gmacs=runs[0]["gmacs"], img_per_s=statistics.median(r["img_per_s"] for r in runs),
            top1_mean=statistics.fmean(top1), top1_std=statistics.stdev(top1) if len(top1) > 1 else 0.0,
            best_top1_mean=statistics.fmean(best), best_top1_std=statistics.stdev(best) if len(best) > 1 else 0.0,
        ))
    return out


def plot(summary: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Top-1 against measured img/s and against parameters, one labelled point (with seed std) per variant."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), tight_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "img_per_s", "inference img/s (measured)"), (axes[1], "params_m", "params (M)")):
        for row in summary:
            ax.errorbar(row[key], row["top1_mean"], yerr=row["top1_std"], fmt="o", capsize=3)
            ax.annotate(row["variant"], (row[key], row["top1_mean"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        ax.set(xlabel=label, ylabel="top-1 (%)")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/ablate.py", description=__doc__.split("\n")[0])
    p.add_argument("grid", help="grid file (configs/cls/ablation/*.yaml)")
    p.add_argument("--output", "-o", default="", help="output folder (default runs/ablate-<grid name>)")
    p.add_argument("--only", default="", help="comma-separated variants to run (default: all)")
    p.add_argument("--seeds", default="", help="comma-separated seeds to run (default: the grid's)")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun) ; 1 trains in this process")
    p.add_argument("--fresh", action="store_true", help="start every selected run over")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the grid; returns one result dict per run (for tests and notebooks)."""
    from tqdm import tqdm

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        grid = load_grid(args.grid)
    except (GridError, OSError) as e:
        raise SystemExit(f"tools/ablate.py: {e}") from None
    import backbones  # noqa: F401  (registers the hybrids)
    from backbones.engine import load_config

    recipe = load_config(grid["recipe"], [str(o) for o in grid["overrides"]])
    # what every run shares (the per-run keys aside): a finished run whose recipe has changed since is detected
    grid["recipe_values"] = _plain({k: v for k, v in recipe.to_dict().items() if k not in ("model_kwargs", "seed")})
    kwargs = variant_kwargs(grid, recipe["model_kwargs"])
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(kwargs)
    missing = [n for n in names if n not in kwargs]
    if missing:
        raise SystemExit(f"tools/ablate.py: --only names unknown variants {missing}; the grid has {list(kwargs)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or grid["seeds"]
    output = Path(args.output or os.path.join("runs", f"ablate-{Path(args.grid).stem}"))
    output.mkdir(parents=True, exist_ok=True)
    as_run = {k: v for k, v in grid.items() if k != "recipe_values"}
    (output / "grid.yaml").write_text(yaml.safe_dump(_plain(dict(as_run, variants=kwargs)), sort_keys=False))

    jobs = [(n, s) for n in names for s in seeds]
    results = []
    bar = tqdm(jobs, desc="ablation", disable=args.no_progress or None, dynamic_ncols=True)
    for name, seed in bar:
        bar.set_postfix_str(f"{name} seed {seed}")
        try:
            result = run_one(grid, name, kwargs[name], seed, output / name / f"seed{seed}", args.nproc, args.fresh)
        except GridError as e:
            raise SystemExit(f"tools/ablate.py: {e}") from None
        results.append(result)
        bar.write(f"{name} seed {seed}: top-1 {result['top1']:.2f} (best {result['best_top1']:.2f}), "
                  f"{result['params_m']:.3f}M params, {result['img_per_s']:.0f} img/s")
    # the tables cover every finished run in the folder, also those of earlier partial invocations
    finished = sorted((json.loads(p.read_text()) for p in output.glob("*/seed*/result.json")),
                      key=lambda r: (list(kwargs).index(r["variant"]) if r["variant"] in kwargs else math.inf,
                                     r["seed"]))
    _write_csv(output / "results.csv", RESULT_FIELDS, finished)
    summary = summarise(finished)
    _write_csv(output / "summary.csv", SUMMARY_FIELDS, summary)
    plot(summary, output / "ablation.png", title=f"{Path(args.grid).stem}: {recipe['model']} variants")
    print(format_table(summary))
    return results


def format_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| variant | mixers | seeds | params (M) | GMACs | img/s | top-1 (mean ± std) | best top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        gmacs = f"{r['gmacs']:.4g}" if r["gmacs"] is not None else "-"
        mixers = str(r["mixers"]).replace("|", "\\|")  # a pattern's stage separators would split the cell
        lines.append(f"| {r['variant']} | {mixers} | {r['seeds']} | {r['params_m']:.3f} | {gmacs} | "
                     f"{r['img_per_s']:.0f} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | "
                     f"{r['best_top1_mean']:.2f} ± {r['best_top1_std']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
