"""tools/compare_table.py: merging --compare CSVs into docs/compare_cpu.csv and the README's ratio table."""

from __future__ import annotations

import csv

import pytest
from tools_testlib import ROOT, load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_table")


def _bench_csv(path, model, ref, ms):
    """A --compare CSV as tools/benchmark.py writes it; ``ms`` = {mode: (ours ms, reference ms)}."""
    fields = load_tool("benchmark").FIELDS
    rows = []
    for mode, (ours, theirs) in ms.items():
        base = dict(model=model, mode=mode, device="cpu", dtype="fp32", batch_size=8, input_size="224x224",
                    repeats=10)
        rows.append(dict(base, impl="ours", ms_per_iter=ours, ratio=round(theirs / ours, 3)))
        rows.append(dict(base, impl=ref, ms_per_iter=theirs))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_collect_and_table(tool, tmp_path):
    _bench_csv(tmp_path / "a.csv", "agent_pvt_tiny", "official-tokens", {"infer": (800.0, 1000.0), "train": (2.0, 1.8)})
    _bench_csv(tmp_path / "b.csv", "davit_tiny", "timm", {"infer": (100.0, 150.0)})
    out = tmp_path / "compare.csv"
    tool.main(["collect", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--threads", "1", "--date", "2026-12-04",
               "--out", str(out)])
    rows = list(csv.DictReader(open(out, newline="")))
    assert len(rows) == 6 and {r["source"] for r in rows} == {"measured"}
    assert {r["family"] for r in rows} == {"Agent-PVT", "DaViT"} and {r["threads"] for r in rows} == {"1"}
    table = tool.markdown(rows).splitlines()
    assert table[2] == ("| Agent-PVT | `agent_pvt_tiny` | official-tokens | 1.25x | 0.90x | 1 / 8 / 10 | 2026-12-04 "
                        "| measured |")
    assert table[3] == "| DaViT | `davit_tiny` | timm | 1.50x | - | 1 / 8 / 10 | 2026-12-04 | measured |"

    # a second collect replaces that model's rows and keeps the others
    _bench_csv(tmp_path / "a.csv", "agent_pvt_tiny", "official-tokens", {"infer": (500.0, 1000.0)})
    tool.main(["collect", str(tmp_path / "a.csv"), "--threads", "2", "--date", "2026-12-05", "--out", str(out)])
    rows = list(csv.DictReader(open(out, newline="")))
    assert [(r["model"], r["mode"]) for r in rows if r["impl"] == "ours"] == [
        ("agent_pvt_tiny", "infer"), ("davit_tiny", "infer")]
    line = tool.markdown(rows).splitlines()[2]
    assert line.startswith("| Agent-PVT | `agent_pvt_tiny` | official-tokens | 2.00x | - | 2 / 8 / 10 | 2026-12-05 |")

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tool.BEGIN}\nold table\n{tool.END}\nafter\n")
    tool.main(["table", str(out), "--readme", str(readme)])
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith(f"{tool.END}\nafter\n")
    assert "| DaViT | `davit_tiny` | timm | 1.50x |" in text


def test_collect_refuses_a_csv_without_ratios(tool, tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("model,impl,mode,ratio\ndavit_tiny,ours,infer,\n")
    with pytest.raises(ValueError, match="no row with a ratio"):
        tool.main(["collect", str(path), "--threads", "1", "--date", "2026-12-04", "--out", str(tmp_path / "o.csv")])
    with pytest.raises(ValueError, match="no family"):
        tool.family_of("resnet50")


def test_committed_table_matches_the_csv():
    """README's ratio table is what the tool writes from docs/compare_cpu.csv, and each ratio is the CSV's
    reference ms / our ms."""
    tool = load_tool("compare_table")
    rows = tool.read_rows(ROOT / "docs" / "compare_cpu.csv")
    for r in rows:
        if r["ratio"] and r["source"] == "measured":
            (ref,) = [x for x in rows if (x["model"], x["mode"]) == (r["model"], r["mode"]) and not x["ratio"]]
            assert float(r["ratio"]) == pytest.approx(float(ref["ms_per_iter"]) / float(r["ms_per_iter"]), abs=2e-3)
    readme = (ROOT / "README.md").read_text()
    assert f"{tool.BEGIN}\n{tool.markdown(rows)}\n{tool.END}" in readme
