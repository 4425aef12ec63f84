#!/usr/bin/env python3
"""Collect ``tools/benchmark.py --compare`` runs into docs/compare_cpu.csv and write the README's ratio table.

    # one --compare CSV per model (inference and training rows), merged with the run's date and thread count:
    python tools/benchmark.py agent_pvt_tiny --compare --mode both -b 8 --img-size 224 --threads 1 --csv a.csv
    python tools/compare_table.py collect a.csv b.csv --threads 1 --date 2026-12-04 --out docs/compare_cpu.csv
    # the Markdown table, printed, or written into README.md between its compare_cpu markers:
    python tools/compare_table.py table docs/compare_cpu.csv [--readme README.md]

docs/compare_cpu.csv keeps every benchmark row (ours and the reference, both modes; the columns of
``tools/benchmark.py``) plus ``family``, ``threads``, ``date`` and ``source`` (``measured`` for rows collected here;
a row typed in from a module docstring names that docstring instead). ``collect`` replaces the rows of the models
it is given and keeps the others. The table has one line per model: ratio = reference ms / our ms (above 1: ours is
faster), for inference and for the training step.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from collections.abc import Sequence
from pathlib import Path


def _benchmark_fields() -> list[str]:
    # the columns of tools/benchmark.py's CSV (a sibling script, not a package: loaded by path)
    spec = importlib.util.spec_from_file_location("_benchmark_tool", Path(__file__).resolve().parent / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.FIELDS)


FIELDS = _benchmark_fields()
EXTRA = ["family", "threads", "date", "source"]
BEGIN = "<!-- compare_cpu: written by tools/compare_table.py table docs/compare_cpu.csv --readme README.md -->"
END = "<!-- /compare_cpu -->"

# model-name prefix -> family, longest prefix first
FAMILIES = [
    ("agent_pvt", "Agent-PVT"), ("agent_swin", "Agent-Swin"), ("biformer", "BiFormer"), ("davit", "DaViT"),
    ("efficientvit", "EfficientViT-MSRA"), ("eca_halonext", "HaloNet"), ("sehalonet", "HaloNet"),
    ("halonet", "HaloNet"), ("focalnet", "FocalNet"), ("hybrid", "HybridNet"), ("litv2", "LITv2"),
    ("ravlt", "RAVLT"), ("transnext", "TransNeXt"),
]


def family_of(model: str) -> str:
    for prefix, family in FAMILIES:
        if model.startswith(prefix):
            return family
    raise ValueError(f"model {model!r}: no family for this name; add its prefix to FAMILIES")


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def collect(paths: Sequence[str], out: str, threads: int, date: str) -> list[dict[str, str]]:
    new: list[dict[str, str]] = []
    for path in paths:
        rows = read_rows(path)
        if not any(r.get("ratio") for r in rows):
            raise ValueError(f"{path}: no row with a ratio; is this a tools/benchmark.py --compare CSV?")
        for r in rows:
            new.append(dict(r, family=family_of(r["model"]), threads=str(threads), date=date, source="measured"))
    models = {r["model"] for r in new}
    old = [r for r in read_rows(out) if r["model"] not in models] if Path(out).exists() else []
    rows = sorted(old + new, key=lambda r: (r["family"], r["model"]))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS + EXTRA)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def markdown(rows: Sequence[dict[str, str]]) -> str:
    lines = [
        "| family | model | reference | inference ratio | training ratio | threads / batch / repeats | date | source |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ours = {r["mode"]: r for r in mine if r.get("ratio")}
        theirs = {r["mode"]: r for r in mine if not r.get("ratio")}
        refs = [r["impl"] for r in theirs.values()]
        if not ours:
            raise ValueError(f"{model}: no row with a ratio (our rows carry it)")
        first = next(iter(ours.values()))

        def ratio(mode: str, ours: dict = ours, theirs: dict = theirs) -> str:
            if mode not in ours:
                return "-"
            if mode in theirs:  # from the times: the CSV's ratio is already rounded to 3 places
                return f"{float(theirs[mode]['ms_per_iter']) / float(ours[mode]['ms_per_iter']):.2f}x"
            return f"{float(ours[mode]['ratio']):.2f}x"

        ref = refs[0] if refs else "?"
        lines.append(
            f"| {first['family']} | `{model}` | {ref} | {ratio('infer')} | {ratio('train')} | "
            f"{first['threads']} / {first['batch_size']} / {first['repeats']} | {first['date']} | {first['source']} |"
        )
    return "\n".join(lines)


def write_readme(readme: str, table: str) -> None:
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    Path(readme).write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tools/compare_table.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="merge tools/benchmark.py --compare CSVs into one file")
    c.add_argument("csvs", nargs="+")
    c.add_argument("--out", default="docs/compare_cpu.csv")
    c.add_argument("--threads", type=int, required=True, help="the --threads of the runs")
    c.add_argument("--date", required=True, help="the day of the runs, YYYY-MM-DD")
    t = sub.add_parser("table", help="print the Markdown table (or write it into a README)")
    t.add_argument("csv", nargs="?", default="docs/compare_cpu.csv")
    t.add_argument("--readme", default="", help="replace the table between the compare_cpu markers of this file")
    args = p.parse_args(argv)
    if args.cmd == "collect":
        rows = collect(args.csvs, args.out, args.threads, args.date)
        print(f"wrote {args.out} ({len(rows)} rows)")
        return
    table = markdown(read_rows(args.csv))
    if args.readme:
        write_readme(args.readme, table)
        print(f"wrote the table into {args.readme}")
    else:
        print(table)


if __name__ == "__main__":
    main()
