"""tools/ablate.py end to end on the digits: a two-variant grid, its tables and plot, resume of a partial grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from tools_testlib import ROOT, load_tool

SMOKE_RECIPE = ROOT / "configs" / "cls" / "digits_hybrid_smoke.yaml"


@pytest.fixture(scope="module")
def ablate_tool():
    return load_tool("ablate")


def _grid(tmp_path: Path, **extra) -> str:
    grid = dict(
        recipe=str(SMOKE_RECIPE),
        model="hybrid_tiny",
        seeds=[0],
        overrides=["epochs=1", "steps_per_epoch=4", "warmup_epochs=0", "validation_batch_size=360"],
        throughput=dict(img_size=32, batch_size=8, repeats=2, warmup=1),
        variants={"identity": {"mixers": "identity"}, "pool_global": {"mixers": "pool | pool | pool+global | global"}},
        **extra,
    )
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_runs_tabulates_and_resumes(tmp_path, ablate_tool, monkeypatch):
    grid, out = _grid(tmp_path), tmp_path / "out"
    results = ablate_tool.main([grid, "--output", str(out), "--no-progress"])
    assert [(r["variant"], r["seed"]) for r in results] == [("identity", 0), ("pool_global", 0)]
    rows = _rows(out / "results.csv")
    assert [r["variant"] for r in rows] == ["identity", "pool_global"]
    for r in rows:
        assert 10.0 < float(r["top1"]) <= 100.0 and float(r["img_per_s"]) > 0 and float(r["params_m"]) > 0
        assert (Path(r["output"]) / "last.pth.tar").is_file()
    assert float(rows[1]["params_m"]) > float(rows[0]["params_m"])  # global attention brings weights
    summary = _rows(out / "summary.csv")
    assert [s["variant"] for s in summary] == ["identity", "pool_global"] and summary[0]["seeds"] == "1"
    assert (out / "ablation.png").stat().st_size > 1000

    # a partly finished grid: one run done, the other trained but not measured -> only the latter is touched
    done = out / "identity" / "seed0" / "result.json"
    done_before = done.stat().st_mtime_ns
    (out / "pool_global" / "seed0" / "result.json").unlink()
    trained = []
    real_load = ablate_tool._load_tool

    def counting_load(name):
        tool = real_load(name)
        if name == "train":
            real_main = tool.main
            tool.main = lambda argv: trained.append(argv) or real_main(argv)
        return tool

    monkeypatch.setattr(ablate_tool, "_load_tool", counting_load)
    again = ablate_tool.main([grid, "--output", str(out), "--no-progress"])
    assert len(trained) == 1 and "pool_global" in trained[0][trained[0].index("--output") + 1]
    assert trained[0][-2:] == ["--resume", "auto"]  # continues from its last.pth.tar
    assert done.stat().st_mtime_ns == done_before
    assert again[1]["top1"] == pytest.approx(results[1]["top1"])  # the resumed run's metrics are the same

    # a finished run of another config is not silently mixed into the tables
    changed = _grid(tmp_path, model_kwargs={"mlp_ratio": 2.0})
    with pytest.raises(SystemExit, match="holds a finished run of another config"):
        ablate_tool.main([changed, "--output", str(out), "--no-progress", "--only", "identity"])


def test_budget_matches_variants_to_the_reference(tmp_path, ablate_tool):
    grid = ablate_tool.load_grid(_grid(tmp_path, budget={"reference": "pool_global", "metric": "params"}))
    kwargs = ablate_tool.variant_kwargs(grid, {"embed_dims": [16, 32, 48, 64], "depths": [1, 1, 2, 1],
                                               "head_dim": 8})
    assert "mlp_ratio" in kwargs["identity"] and "mlp_ratio" not in kwargs["pool_global"]
    json.dumps(kwargs)  # plain lists and numbers: YAML / JSON safe


def test_bad_grids(tmp_path, ablate_tool):
    with pytest.raises(SystemExit, match=r"unknown grid key\(s\) \['variant'\]"):
        ablate_tool.main([_grid(tmp_path, variant={}), "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"--only names unknown variants \['nope'\]"):
        ablate_tool.main([_grid(tmp_path), "--output", str(tmp_path / "o"), "--only", "nope"])
    with pytest.raises(ablate_tool.GridError, match="budget.reference must name a variant"):
        grid = ablate_tool.load_grid(_grid(tmp_path, budget={"reference": "global"}))
        ablate_tool.variant_kwargs(grid, {})
