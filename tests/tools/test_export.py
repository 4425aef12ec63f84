"""tools/export.py: ONNX and pt2 files of a (reduced) model that exports today, checked here independently of the
tool (onnxruntime / torch.export.load on a size the tool did not check, against the eager model); clear errors."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from model_specs import small_kwargs
from tools_testlib import load_tool

import backbones  # noqa: F401  (registers the models)

NAME = "efficientvit_m0"
KWARGS = dict(small_kwargs(NAME), num_classes=10)
COMMON = ["--img-size", "48", "--model-kwargs", json.dumps(KWARGS), "--repeats", "1", "--no-progress"]


@pytest.fixture(scope="module")
def export_tool():
    return load_tool("export")


def _eager(x):
    torch.manual_seed(0)  # the tool builds its model after the same seed
    model = timm.create_model(NAME, **KWARGS).eval()
    with torch.no_grad():
        return model(x)


def _close(actual, expected):
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= 1e-4 * scale + 1e-6


def test_onnx_dynamic_with_check(export_tool, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    result = export_tool.main([NAME, "--format", "onnx", "--dynamic", "--check", "--check-size", "45", "61",
                               "--out", str(out), "--csv", str(tmp_path / "c.csv"), *COMMON])
    assert out.is_file() and result["size_mb"] > 0
    assert [r["input_size"] for r in result["checks"]] == ["48x48", "45x61"]
    assert all(r["rel_diff"] <= 1e-4 and r["eager_ms"] > 0 and r["exported_ms"] > 0 for r in result["checks"])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "onnxruntime ms" in printed and "max|diff|" in printed
    assert (tmp_path / "c.csv").read_text().startswith("model,format,input_size,max_abs_diff")
    # the file itself, at a third size, in a fresh onnxruntime session
    x = torch.randn(1, 3, 53, 40)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    _close(torch.from_numpy(got), _eager(x))


def test_pt2_static_with_check(export_tool, tmp_path):
    # static sizes here (the ONNX test covers --dynamic): loading a dynamic program parses its symbolic shapes,
    # tens of seconds for a whole network
    out = tmp_path / "m.pt2"
    result = export_tool.main([NAME, "--format", "pt2", "--check", "--out", str(out), *COMMON])
    assert [r["input_size"] for r in result["checks"]] == ["48x48"] and result["checks"][0]["rel_diff"] <= 1e-4
    program = torch.export.load(str(out))
    x = torch.randn(1, 3, 48, 48)
    _close(program.module()(x), _eager(x))


class _Mystery(torch.nn.Module):
    """A conv, then an operator with no ONNX translation."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.ops.export_test.mystery(self.conv(x)).mean((2, 3))


@torch.library.custom_op("export_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_mystery.register_fake
def _(x):
    return torch.empty_like(x)


def test_unexportable_operator_is_named_with_the_family(export_tool, tmp_path, monkeypatch):
    monkeypatch.setattr(export_tool, "_build", lambda name, args: _Mystery())
    with pytest.raises(SystemExit) as info:
        export_tool.main(["test_vit", "--format", "onnx", "--img-size", "16", "--out", str(tmp_path / "m.onnx"),
                          "--no-progress"])
    message = str(info.value)
    assert "test_vit (family test_export) cannot be exported to onnx" in message
    assert "operator export_test::mystery" in message and "no ONNX translation" in message


def test_size_outside_the_exported_range_is_a_clear_error(export_tool, tmp_path, monkeypatch):
    class Capped(torch.nn.Module):  # the height is specialised to <= 40 by Python control flow
        def forward(self, x):
            return x.mean((2, 3)) if x.shape[2] <= 40 else x.amax((2, 3))

    monkeypatch.setattr(export_tool, "_build", lambda name, args: Capped())
    with pytest.raises(SystemExit, match=r"accepts H \d+\.\.40, W .* only, not H = 61"):
        export_tool.main(["test_vit", "--format", "pt2", "--img-size", "32", "--dynamic", "--check", "--check-size",
                          "61", "32", "--out", str(tmp_path / "m.pt2"), "--repeats", "1", "--no-progress"])


def test_arguments(export_tool):
    with pytest.raises(SystemExit):
        export_tool.main([NAME, "--format", "onnx", "--check-size", "40", "40"])  # needs --dynamic
    with pytest.raises(SystemExit, match="unknown model 'efficientvit_m00'"):
        export_tool.main(["efficientvit_m00", "--format", "pt2"])


def test_size_condition_imposed_while_tracing_is_named(export_tool, tmp_path, monkeypatch):
    class Windowed(torch.nn.Module):  # reshapes into 8-pixel windows without padding: H and W must divide by 8
        def forward(self, x):
            b, c, h, w = x.shape
            return x.view(b, c, h // 8, 8, w // 8, 8).mean((3, 5)).flatten(1).mean(1, keepdim=True)

    monkeypatch.setattr(export_tool, "_build", lambda name, args: Windowed())
    expected = r"does not serve 45x61: the model.s code fixed the condition .*x.size\(\)\[2\] // 8"
    with pytest.raises(SystemExit, match=expected):
        export_tool.main(["test_vit", "--format", "pt2", "--img-size", "32", "--dynamic", "--check", "--check-size",
                          "45", "61", "--out", str(tmp_path / "m.pt2"), "--repeats", "1", "--no-progress"])
