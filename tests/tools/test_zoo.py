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


def _edit_csv(path, model, **cells):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for r in rows:
        if r["model"] == model:
            r.update({k: str(v) for k, v in cells.items()})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_zoo_resume_keeps_measured_rows_and_measures_the_rest(zoo_tool, tmp_path, capsys):
    quick = ["--batch-size", "1", "--repeats", "1", "--warmup", "0", "--compile-backend", "eager", "--no-progress",
             "--out-dir", str(tmp_path)]
    zoo_tool.main(["--models", "efficientvit_m0", *quick])
    table = tmp_path / "zoo.csv"
    _edit_csv(table, "efficientvit_m0", eager_img_s=12345.0)  # a value no measurement gives: it must survive
    rows = {r["model"]: r for r in zoo_tool.main(["--models", "efficientvit_m[01]", "--resume", *quick])}
    assert rows["efficientvit_m0"]["eager_img_s"] == 12345.0
    assert 0 < rows["efficientvit_m1"]["eager_img_s"] != 12345.0 and rows["efficientvit_m1"]["compile_s"] > 0
    assert "1 of 2 models already measured" in capsys.readouterr().err
    # a model outside --models stays in the file; another batch size is another setting: measured again
    rows = {r["model"]: r for r in zoo_tool.main(["--models", "efficientvit_m0", "--resume", *quick,
                                                  "--batch-size", "2"])}
    assert set(rows) == {"efficientvit_m0", "efficientvit_m1"}
    assert rows["efficientvit_m0"]["eager_img_s"] != 12345.0 and "batch 2" in rows["efficientvit_m0"]["setting"]
    assert "| `efficientvit_m1` |" in (tmp_path / "zoo.md").read_text()


def test_zoo_time_budget_leaves_the_rest_unmeasured(zoo_tool, tmp_path, capsys):
    rows = zoo_tool.main(["--models", "efficientvit_m[01]", "--time-budget", "1e-9", "--repeats", "1", "--warmup",
                          "0", "--batch-size", "1", "--compile-backend", "eager", "--no-progress",
                          "--out-dir", str(tmp_path)])
    # the budget is checked before each model: the first is measured, the second is not started
    assert rows[0]["eager_img_s"] > 0 and rows[1]["eager_img_s"] is None
    err = capsys.readouterr().err
    assert "stopping before efficientvit_m1" in err and "1 models not measured yet (efficientvit_m1)" in err
    assert "| `efficientvit_m1` | efficientvit_msra | 224x224 |" in (tmp_path / "zoo.md").read_text()


def test_zoo_arguments(zoo_tool):
    with pytest.raises(SystemExit):
        zoo_tool.parse_args(["--time-budget", "0"])
    with pytest.raises(SystemExit):
        zoo_tool.parse_args(["--resume", "--no-measure"])


def test_zoo_plot_enlarges_the_crowded_region(zoo_tool, tmp_path):
    # 14 made-up measured rows: enough points for the second (enlarged) panel
    rows = [dict(model=f"m{i}", family=f"f{i % 3}", input_size="224x224", params_m=5.0 + i, gmacs=1.0 + i,
                 top1=70.0 + i, weights="in1k", eager_img_s=100.0 / (i + 1), compiled_img_s=120.0 / (i + 1),
                 speedup=1.2, compile_s=3.0, note="", measured_on="a test", setting="batch 8")
            for i in range(14)]
    zoo_tool.write_csv(rows, tmp_path / "in.csv")
    zoo_tool.main(["--from-csv", str(tmp_path / "in.csv"), "--out-dir", str(tmp_path / "out")])
    with open(tmp_path / "out" / "zoo.png", "rb") as f:
        header = f.read(24)
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) == (1800, 780)  # two panels, 15 x 6.5 in at 120 dpi
    zoo_tool.main(["--from-csv", str(tmp_path / "in.csv"), "--models", "m1", "m2", "--out-dir", str(tmp_path / "one")])
    with open(tmp_path / "one" / "zoo.png", "rb") as f:
        header = f.read(24)
    assert int.from_bytes(header[16:20], "big") == 1260  # one panel, 10.5 in
