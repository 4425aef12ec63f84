"""tools/benchmark.py: figures, CSV and plot for a tiny model; --compare against a reference."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

import backbones
from backbones import _bench

TINY = ["--img-size", "32", "--batch-size", "2", "--repeats", "1", "--warmup", "0", "--no-progress"]


def test_benchmark_writes_csv_and_plot(tmp_path, bench_tool):
    out_csv, out_png = tmp_path / "bench.csv", tmp_path / "bench.png"
    rows = bench_tool.main(["test_resnet", "test_vit", "--mode", "both", "--csv", str(out_csv), "--plot", str(out_png),
                            "--model-kwargs", json.dumps({"num_classes": 10}), *TINY])
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("test_resnet", "infer"), ("test_resnet", "train"), ("test_vit", "infer"), ("test_vit", "train")]
    with open(out_csv, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 4 and set(written[0]) == set(bench_tool.FIELDS)
    for r in rows:
        assert r["params_m"] > 0 and r["gmacs"] > 0 and r["img_per_s"] > 0 and r["peak_mem_mb"] > 0
        assert r["impl"] == "timm" and r["ratio"] is None and r["input_size"] == "32x32"
    assert out_png.stat().st_size > 1000


def test_gmacs_match_a_hand_count(bench_tool):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    x = torch.randn(4, 3, 16, 16)
    macs = 16 * 16 * 8 * 3 * 9 + 8 * 16 * 16 * 10  # per image
    assert bench_tool.count_gmacs(model, x, "torch") == pytest.approx(macs / 1e9)


def test_compare_needs_a_reference(bench_tool):
    with pytest.raises(SystemExit, match="test_resnet.*has no reference"):
        bench_tool.main(["test_resnet", "--compare", *TINY])


def test_compare_with_registered_reference(tmp_path, bench_tool, monkeypatch):
    import timm

    monkeypatch.setattr(_bench, "_REFERENCES", [])
    _bench.register_reference("test_res*", lambda name, **kw: timm.create_model(name, **kw), "clean-room")
    assert [r.label for r in backbones.benchmark_references("test_resnet")] == ["clean-room"]
    rows = bench_tool.main(["test_resnet", "--compare", "--mode", "infer", "--plot", str(tmp_path / "c.png"), *TINY])
    assert [r["impl"] for r in rows] == ["timm", "clean-room"]
    assert rows[0]["ratio"] == pytest.approx(rows[1]["ms_per_iter"] / rows[0]["ms_per_iter"], rel=1e-2)
    assert (tmp_path / "c.png").is_file()


@pytest.mark.skipif(not backbones.list_models("focalnet*"), reason="FocalNet is not registered yet")
def test_compare_with_timm_original(tmp_path, bench_tool):
    rows = bench_tool.main(["focalnet_tiny_srf", "--compare", "--mode", "infer", "--batch-size", "1", "--img-size",
                            "32", "--repeats", "1", "--warmup", "0", "--no-progress", "--csv", str(tmp_path / "f.csv")])
    assert [r["impl"] for r in rows] == ["ours", "timm"]
    assert rows[0]["params_m"] == rows[1]["params_m"]
    assert rows[0]["gmacs"] == pytest.approx(rows[1]["gmacs"], rel=1e-3)
    assert rows[0]["ratio"] > 0 and rows[1]["ratio"] is None


class _EnvMixer(nn.Module):
    """Stands in for a sparse mixer: records the BACKBONES_KERNELS it ran under, as the real blocks do."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.num_classes = 4
        self.last_kernel = None

    def forward(self, x):
        import os

        self.last_kernel = os.environ.get("BACKBONES_KERNELS", "auto")
        return self.conv(x).mean((2, 3))


def test_single_kernels_choice_is_applied_during_the_run_only(bench_tool, monkeypatch):
    monkeypatch.delenv("BACKBONES_KERNELS", raising=False)
    monkeypatch.setattr(bench_tool, "_build", lambda *a: _EnvMixer())
    rows = bench_tool.main(["test_vit", "--kernels", "torch", "--flops", "none", *TINY])
    assert [(r["impl"], r["kernels"], r["ratio"]) for r in rows] == [("timm", "torch", None)]
    import os

    assert "BACKBONES_KERNELS" not in os.environ


def test_kernels_compared_in_one_run(bench_tool, monkeypatch, tmp_path):
    monkeypatch.setenv("BACKBONES_KERNELS", "auto")
    monkeypatch.setattr(bench_tool, "_build", lambda *a: _EnvMixer())
    rows = bench_tool.main(["test_vit", "--kernels", "torch", "triton", "--mode", "both", "--flops", "none",
                            "--csv", str(tmp_path / "k.csv"), *TINY])
    assert [(r["impl"], r["mode"], r["kernels"]) for r in rows] == [
        ("timm[torch]", "infer", "torch"), ("timm[triton]", "infer", "triton"),
        ("timm[torch]", "train", "torch"), ("timm[triton]", "train", "triton")]
    for base, other in (rows[:2], rows[2:]):
        assert base["ratio"] is None
        assert other["ratio"] == pytest.approx(base["ms_per_iter"] / other["ms_per_iter"], rel=1e-2)
    with open(tmp_path / "k.csv", newline="") as f:
        assert [r["kernels"] for r in csv.DictReader(f)] == ["torch", "triton", "torch", "triton"]
    import os

    assert os.environ["BACKBONES_KERNELS"] == "auto"


def test_kernels_flag_errors(bench_tool):
    with pytest.raises(SystemExit):
        bench_tool.main(["test_vit", "--kernels", "torch", "torch", *TINY])
    with pytest.raises(SystemExit):
        bench_tool.main(["test_vit", "--kernels", "torch", "triton", "--compare", *TINY])


def test_unknown_model(bench_tool):
    with pytest.raises(SystemExit, match="unknown model 'test_resnett'"):
        bench_tool.main(["test_resnett", *TINY])


def test_kernels_compare_on_a_real_sparse_mixer(bench_tool):
    """--kernels torch triton on a (reduced) TransNeXt: the triton rows really ran the aggregated-attention kernel
    (under Triton's interpreter on CPU here, which tests/conftest.py turns on without a GPU)."""
    from backbones.kernels import interpreter_enabled

    if not (interpreter_enabled() or torch.cuda.is_available()):
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    small = {"embed_dims": [24, 48, 72, 96], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 4]}
    rows = bench_tool.main(["transnext_micro", "--kernels", "torch", "triton", "--mode", "both", "--flops", "none",
                            "--model-kwargs", json.dumps(small), "--img-size", "32", "--batch-size", "1",
                            "--repeats", "1", "--warmup", "0", "--no-progress"])
    assert [(r["impl"], r["kernels"]) for r in rows] == [
        ("ours[torch]", "torch"), ("ours[triton]", "triton")] * 2
    assert rows[1]["ratio"] > 0 and rows[0]["ratio"] is None


def test_kernels_triton_on_cpu_without_interpreter(bench_tool, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(SystemExit, match="--kernels triton needs --device cuda"):
        bench_tool.main(["test_vit", "--kernels", "triton", "--device", "cpu", *TINY])


def test_compile_against_eager_in_one_run(bench_tool, tmp_path):
    """--compile: eager and compiled rows of the same model, interleaved, the ratio on the compiled row, compile
    time apart (backend "eager" here: dynamo's capture without inductor's code generation, for speed)."""
    import torch._dynamo

    compiled_calls = []

    def counting_backend(gm, example_inputs):  # a backend that records it was used, then runs the captured graph
        compiled_calls.append(len(gm.graph.nodes))
        return gm.forward

    torch._dynamo.register_backend(counting_backend, name="bench_test_counting")
    out_csv, out_png = tmp_path / "c.csv", tmp_path / "c.png"
    rows = bench_tool.main(["test_vit", "--compile", "--compile-backend", "bench_test_counting", "--fullgraph",
                            "--mode", "both", "--flops", "none", "--csv", str(out_csv), "--plot", str(out_png), *TINY])
    assert [(r["impl"], r["mode"]) for r in rows] == [
        ("timm[eager]", "infer"), ("timm[bench_test_counting]", "infer"),
        ("timm[eager]", "train"), ("timm[bench_test_counting]", "train")]
    assert len(compiled_calls) >= 2 and all(n > 1 for n in compiled_calls)  # one capture per mode at least
    for eager, compiled in (rows[:2], rows[2:]):
        assert eager["ratio"] is None and eager["compile_s"] is None
        assert compiled["ratio"] == pytest.approx(eager["ms_per_iter"] / compiled["ms_per_iter"], rel=1e-2)
        assert compiled["compile_s"] > 0 and compiled["params_m"] == eager["params_m"]
    with open(out_csv, newline="") as f:
        assert [r["compile_s"] != "" for r in csv.DictReader(f)] == [False, True, False, True]
    assert out_png.stat().st_size > 1000


def test_compile_flag_errors(bench_tool):
    with pytest.raises(SystemExit):
        bench_tool.main(["test_vit", "--compile", "--compare", *TINY])
    with pytest.raises(SystemExit):
        bench_tool.main(["test_vit", "--fullgraph", *TINY])
