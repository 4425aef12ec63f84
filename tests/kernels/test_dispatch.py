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


# --- inside torch.compile(fullgraph=True): the choice must not break the graph -----------------------------------


def _blocks():
    from backbones.blocks import AggregatedAttention, BiLevelRoutingAttention, HaloAttention

    # odd sizes: padding, partial regions / windows and masked keys
    return {
        "BiLevelRoutingAttention": (BiLevelRoutingAttention(16, num_heads=2, num_regions=3, topk=2), (2, 13, 11, 16)),
        "AggregatedAttention": (AggregatedAttention(16, num_heads=2, pool_ratio=4), (2, 13, 11, 16)),
        "HaloAttention": (HaloAttention(16, num_heads=2, block_size=4, halo_size=1), (2, 16, 13, 11)),
    }


def _naive_select(requested: str, device: str) -> str:
    """The documented auto / forced choice for one float32 call (no unsupported option)."""
    if requested == "torch":
        return "torch"
    if requested == "triton":
        return "triton"
    return "triton" if device == "cuda" and kernels.triton_available() else "torch"


@pytest.mark.parametrize("name", ["BiLevelRoutingAttention", "AggregatedAttention", "HaloAttention"])
def test_block_compiles_fullgraph_and_matches_eager(name, monkeypatch, caplog):
    import torch._dynamo

    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.setattr(kernels, "_logged", set())
    torch._dynamo.reset()
    block, shape = _blocks()[name]
    block.eval()
    x = torch.randn(shape)
    compiled = torch.compile(block, fullgraph=True, backend="eager")  # fullgraph: any graph break is an error
    with torch.no_grad(), caplog.at_level(logging.DEBUG, logger="backbones.kernels"):
        out = compiled(x)
        assert block.last_kernel == "torch"  # the attribute is still set by a compiled call
        block.last_kernel = None
        expected = block(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # logged once (at trace time, and not again by the eager call with the same choice)
    records = [r for r in caplog.records if r.getMessage().startswith(f"{name}: torch kernel")]
    assert len(records) == 1 and "not CUDA" in records[0].getMessage()


@pytest.mark.parametrize("name", ["AggregatedAttention", "HaloAttention"])
def test_block_compiles_fullgraph_with_gradients(name, monkeypatch):
    import torch._dynamo

    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    torch._dynamo.reset()
    block, shape = _blocks()[name]
    x = torch.randn(shape, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    out = compiled(x)
    (grad_c,) = torch.autograd.grad(out.square().sum(), x)
    out_e = block(x)
    (grad_e,) = torch.autograd.grad(out_e.square().sum(), x)
    torch.testing.assert_close(out, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("requested", ["auto", "torch", "triton"])
def test_select_inside_compile_is_the_eager_choice(monkeypatch, requested):
    import torch._dynamo

    monkeypatch.setenv(kernels.ENV_VAR, requested)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # forced Triton on CPU tensors needs the interpreter
    torch._dynamo.reset()
    seen = []

    def f(x):
        choice = kernels.select("CompiledOp", x)
        seen.append(choice)  # a Python side effect at trace time
        return x + 1 if choice == "triton" else x - 1

    x = torch.zeros(3)
    out = torch.compile(f, fullgraph=True, backend="eager")(x)
    expected = _naive_select(requested, "cpu")
    assert seen == [expected]
    torch.testing.assert_close(out, x + 1 if expected == "triton" else x - 1)


def test_select_under_fx_symbolic_tracing(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)

    def f(x):
        return x + 1 if kernels.select("FxOp", x) == "triton" else x - 1

    gm = torch.fx.symbolic_trace(f)
    torch.testing.assert_close(gm(torch.zeros(2)), torch.full((2,), -1.0))
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="FxOp: BACKBONES_KERNELS=triton, but FX symbolic tracing"):
        torch.fx.symbolic_trace(f)
