"""tools/zoo.py: the zoo page, its CSV and plot for one or two small models with weights."""

from __future__ import annotations

import csv

import pytest
from model_specs import PUBLISHED_PARAMS
from tools_testlib import load_tool


@pytest.fixture(scope="module")
def zoo_tool():
    return load_tool("zoo")


def test_zoo_measures_eager_and_compiled(zoo_tool, tmp_path):
    # batch 1, one repeat, dynamo's "eager" backend (capture without code generation): the plumbing, quickly
    rows = zoo_tool.main(["--models", "efficientvit_m0", "--out-dir", str(tmp_path), "--batch-size", "1",
                          "--repeats", "1", "--warmup", "0", "--compile-backend", "eager", "--no-progress"])
    assert [r["model"] for r in rows] == ["efficientvit_m0"]
    row = rows[0]
    assert row["eager_img_s"] > 0 and row["compiled_img_s"] > 0 and row["speedup"] > 0 and not row["note"]
    assert row["params_m"] == pytest.approx(PUBLISHED_PARAMS["efficientvit_m0"][0] / 1e6, abs=0.01)
    assert row["top1"] == 63.2 and row["family"] == "efficientvit_msra"  # Cream EfficientViT README, M0
    page = (tmp_path / "zoo.md").read_text()
    assert "![top-1 against throughput](zoo.png)" in page and "| `efficientvit_m0` | efficientvit_msra |" in page
    assert "batch 1" in page and 'torch.compile(backend="eager")' in page
    assert (tmp_path / "zoo.png").stat().st_size > 5000
    with open(tmp_path / "zoo.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["model"] for r in written] == ["efficientvit_m0"] and float(written[0]["compiled_img_s"]) > 0


def test_zoo_without_measurement_and_from_csv(zoo_tool, tmp_path):
    rows = zoo_tool.main(["--models", "efficientvit_m[01]", "davit_giant", "--no-measure", "--out-dir",
                          str(tmp_path / "a"), "--no-progress"])
    # davit_giant has no published weights: no point
    assert [r["model"] for r in rows] == ["efficientvit_m0", "efficientvit_m1"]
    assert all(r["eager_img_s"] is None for r in rows)
    page = (tmp_path / "a" / "zoo.md").read_text()
    assert "GMACs per image (no throughput measured yet" in page and page.count("| `efficientvit_m") == 2
    # redrawn from the CSV, restricted to one model
    again = zoo_tool.main(["--from-csv", str(tmp_path / "a" / "zoo.csv"), "--models", "efficientvit_m1",
                           "--out-dir", str(tmp_path / "b")])
    assert [r["model"] for r in again] == ["efficientvit_m1"] and again[0]["top1"] == 68.4
    assert (tmp_path / "b" / "zoo.png").is_file() and not (tmp_path / "b" / "zoo.csv").exists()


def test_zoo_no_match(zoo_tool, tmp_path):
    with pytest.raises(SystemExit, match="no model with published weights"):
        zoo_tool.main(["--models", "nothing_like_this*", "--out-dir", str(tmp_path), "--no-measure"])
