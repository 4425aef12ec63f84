"""The generic choice between the Triton kernels and the PyTorch paths (backbones.kernels.select)."""

import logging

import pytest
import torch

import backbones.kernels as kernels


@pytest.fixture
def cpu():
    return torch.zeros(2)


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")


def test_auto_uses_torch_for_cpu_tensors(monkeypatch, cpu):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.requested_backend() == "auto"
    assert kernels.select("Op", cpu) == "torch"
    # even with the interpreter on: auto never runs the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.select("Op", cpu) == "torch"


@pytest.mark.parametrize("value", ["torch", "TORCH", " torch "])
def test_forced_torch(monkeypatch, cpu, value):
    monkeypatch.setenv(kernels.ENV_VAR, value)
    assert kernels.select("Op", cpu, unsupported="anything") == "torch"


def test_bad_value_is_a_clear_error(monkeypatch, cpu):
    monkeypatch.setenv(kernels.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="BACKBONES_KERNELS must be one of auto, torch, triton.*'cuda'"):
        kernels.select("Op", cpu)


def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch, cpu, no_interpreter):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match=r"Op: BACKBONES_KERNELS=triton.*\['cpu'\].*TRITON_INTERPRET=1"):
        kernels.select("Op", cpu)


def test_forced_triton_under_the_interpreter(monkeypatch, cpu):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.select("Op", cpu) == "triton"
    with pytest.raises(RuntimeError, match="Op: BACKBONES_KERNELS=triton, but the kernel does not support dropout"):
        kernels.select("Op", cpu, unsupported="dropout")


def test_dtypes_the_kernels_do_not_take(monkeypatch, cpu):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.select("Op", cpu.double()) == "torch"
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    for dtype in kernels.DTYPES:
        assert kernels.select("Op", cpu.to(dtype)) == "triton"
    with pytest.raises(RuntimeError, match=r"Op: .*does not support dtype torch\.float64"):
        kernels.select("Op", cpu.to(torch.bfloat16), cpu.double())
    # a reason of the caller's comes first
    with pytest.raises(RuntimeError, match="does not support dropout"):
        kernels.select("Op", cpu.double(), unsupported="dropout")


def test_forced_triton_without_triton(monkeypatch, cpu):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="Triton is not importable"):
        kernels.select("Op", cpu)


def test_mixed_devices_are_not_cuda(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    meta = torch.empty(2, device="meta")
    assert kernels.select("Op", torch.zeros(2), meta) == "torch"


def test_choice_is_logged_once_at_debug(monkeypatch, cpu, caplog):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.setattr(kernels, "_logged", set())
    with caplog.at_level(logging.DEBUG, logger="backbones.kernels"):
        kernels.select("LoggedOp", cpu)
        kernels.select("LoggedOp", cpu)
    records = [r for r in caplog.records if "LoggedOp" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    assert "torch kernel" in records[0].getMessage() and "not CUDA" in records[0].getMessage()


def test_import_backbones_does_not_import_triton():
    import subprocess
    import sys

    # timm may import triton on its own; what matters is that our kernel modules are not loaded eagerly
    code = (
        "import sys, backbones; "
        "print(any(m.startswith('backbones.kernels.') and m != 'backbones.kernels._common' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_uses_triton_for_cuda_tensors(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    x = torch.zeros(2, device="cuda")
    expected = "triton" if kernels.triton_available() else "torch"
    assert kernels.select("Op", x) == expected
    assert kernels.select("Op", x, unsupported="something") == "torch"
