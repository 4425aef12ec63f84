"""Fused aggregated-attention kernel (TransNeXt) against the block's PyTorch path.

Kernel level: ``aggregated_attention`` against ``_aggregate_torch`` (the block's own attention core) on the same
inputs, forward and the gradients of all eight tensor inputs, on maps whose border pixels have partial windows,
H != W, window sizes 1 / 3 / 5, one pooled key, a non-power-of-two pooled count (2 x 3) and more pooled keys than
one tile, head dims 24 and 40, strided (non-contiguous) views like the block's. Low precision: fp16 / bf16 inputs
against the fp32 path on the same rounded inputs. Block level: one AggregatedAttention instance run with
``BACKBONES_KERNELS=torch`` and ``=triton``; output and the gradients of the input and every parameter, in fp32
("extrapolate" and "interpolate" position bias, a fixed 1 x 1 pooled grid) and under autocast.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (tests/conftest.py turns it on); with a
GPU the same tests run on CUDA tensors. Triton's interpreter gets bf16 ``tl.dot`` wrong, so under it the kernel
multiplies bf16 tiles in fp32 (see ``_config``); everything else of the bf16 path is exercised as on a GPU.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from backbones.blocks.aggregated_attention import AggregatedAttention, _aggregate_torch
from backbones.kernels import interpreter_enabled, triton_available

if interpreter_enabled():
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None
pytestmark = pytest.mark.skipif(
    DEVICE is None or not triton_available(), reason="needs Triton, and CUDA or TRITON_INTERPRET=1"
)

NAMES = ("q_scaled", "k", "v", "k_pool", "v_pool", "pos_bias", "rel_local", "w_add")


def make_inputs(b, h, w, heads, hd, ws, num_pooled, seed=0, strided=False):
    """Realistic magnitudes: normalised keys, queries of norm ~ the length scale, biases O(1), fp32."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    if strided:  # k, v as interleaved views and pooled tensors permuted, as the block produces them
        kv = randn(b, h, w, 2, heads, hd)
        k, v = kv.unbind(3)
        kvp = randn(b, num_pooled, 2, heads, hd).permute(2, 0, 3, 1, 4)
        k_pool, v_pool = kvp.unbind(0)
        w_add = randn(b, h, w, ws * ws, heads).transpose(-1, -2) * 0.3
    else:
        k, v = randn(b, h, w, heads, hd), randn(b, h, w, heads, hd)
        k_pool, v_pool = randn(b, heads, num_pooled, hd), randn(b, heads, num_pooled, hd)
        w_add = randn(b, h, w, heads, ws * ws) * 0.3
    q = (F.normalize(randn(b, h, w, heads, hd), dim=-1) + 0.1 * randn(heads, hd)) * 8.0
    k, k_pool = F.normalize(k, dim=-1), F.normalize(k_pool, dim=-1)
    pos_bias = randn(heads, h * w, num_pooled)
    rel_local = randn(heads, ws * ws)
    return [q, k, v, k_pool, v_pool, pos_bias, rel_local, w_add]


def leaves(tensors, dtype=None):
    return [t.detach().to(DEVICE, dtype).requires_grad_() for t in tensors]


def torch_core(inputs, ws):
    return _aggregate_torch(*inputs, ws, attn_drop=torch.nn.Identity())


def kernel(inputs, ws):
    from backbones.kernels.aggregated_attention import aggregated_attention

    return aggregated_attention(*inputs, ws)


def assert_close_scaled(actual, expected, tol, name):
    """|actual - expected| <= tol * (max|expected| + 1) elementwise, plus tol relative."""
    scale = expected.abs().max().item() + 1.0
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=tol * scale, rtol=tol, msg=lambda m: f"{name}: {m}"
    )


def check_fwd_bwd(inputs_ref, inputs_test, ws, tol, seed=1):
    ref = torch_core(inputs_ref, ws)
    out = kernel(inputs_test, ws)
    assert out.dtype == inputs_test[0].dtype and out.shape == ref.shape
    assert_close_scaled(out, ref, tol, "out")
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    g_ref = torch.autograd.grad(ref, inputs_ref, grad)
    g_out = torch.autograd.grad(out, inputs_test, grad.to(out.dtype))
    for name, a, r, x in zip(NAMES, g_out, g_ref, inputs_test):
        assert a.dtype == x.dtype and a.shape == x.shape, name
        assert_close_scaled(a, r, tol, f"grad {name}")


# (B, H, W, heads, head_dim, window, pooled, strided)
FP32_CASES = {
    "5x7_pool2x3_b2_strided": (2, 5, 7, 2, 24, 3, 6, True),
    "4x4_one_pooled": (1, 4, 4, 2, 24, 3, 1, False),
    "3x4_window5_hd40": (1, 3, 4, 1, 40, 5, 2, False),
    "3x3_window1": (1, 3, 3, 2, 24, 1, 3, False),
    "6x6_three_pooled_tiles": (1, 6, 6, 1, 24, 3, 70, False),
}


@pytest.mark.parametrize("case", list(FP32_CASES))
def test_kernel_matches_torch_fp32(case):
    b, h, w, heads, hd, ws, num_pooled, strided = FP32_CASES[case]
    inputs = make_inputs(b, h, w, heads, hd, ws, num_pooled, strided=strided)
    check_fwd_bwd(leaves(inputs), leaves(inputs), ws, tol=1e-5)


def test_kernel_partial_grads_and_no_grad():
    inputs = make_inputs(1, 4, 5, 2, 24, 3, 2)
    ref = leaves(inputs)
    test = [t.detach().to(DEVICE) for t in inputs]
    for i in (0, 4, 7):  # q_scaled, v_pool, w_add only
        test[i].requires_grad_()
    out = kernel(test, 3)
    grads = torch.autograd.grad(out.sum(), [test[0], test[4], test[7]])
    expected = torch.autograd.grad(torch_core(ref, 3).sum(), [ref[0], ref[4], ref[7]])
    for a, r in zip(grads, expected):
        assert_close_scaled(a, r, 1e-5, "grad")
    with torch.no_grad():
        assert_close_scaled(kernel(test, 3), torch_core(ref, 3), 1e-5, "out (no_grad)")


def test_kernel_can_fail():
    """The comparison is sensitive: a wrong window bias on one offset is caught."""
    inputs = make_inputs(1, 4, 5, 2, 24, 3, 2)
    ref = torch_core(leaves(inputs), 3)
    bad = leaves(inputs)
    with torch.no_grad():
        bad[6][:, 0] += 0.05
    with pytest.raises(AssertionError):
        assert_close_scaled(kernel(bad, 3), ref, 1e-5, "out")


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_kernel_low_precision(dtype, tol):
    """fp16 / bf16 inputs, fp32 accumulation: against the fp32 path on the same rounded inputs."""
    inputs = [t.to(dtype) for t in make_inputs(2, 4, 5, 2, 24, 3, 6, strided=True)]
    check_fwd_bwd(leaves(inputs, torch.float32), leaves(inputs), 3, tol=tol)


def test_kernel_rejects_bad_input():
    from backbones.kernels.aggregated_attention import aggregated_attention

    inputs = leaves(make_inputs(1, 3, 3, 2, 24, 3, 2))
    with pytest.raises(ValueError, match="window_size"):
        aggregated_attention(*inputs, 2)
    with pytest.raises(TypeError, match="float64"):
        aggregated_attention(*[t.double() for t in inputs], 3)
    with pytest.raises(ValueError, match="pos_bias"):
        aggregated_attention(*inputs[:5], inputs[5][:, :-1], *inputs[6:], 3)


# ---------------------------------------------------------------------------------------------- block level

BLOCK_CASES = {
    # name: (kwargs, B, H, W)
    "extrapolate_5x7_pool2x3": (dict(pool_ratio=2, pretrain_grid=6), 2, 5, 7),
    "interpolate_6x5": (dict(pool_ratio=3, pos_bias_mode="interpolate", pos_bias_grid=(8, 7)), 1, 6, 5),
    "fixed_pool_1x1": (dict(pool_ratio=4, fixed_pool_size=1, pretrain_grid=6), 1, 4, 5),
}


def _randomize(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(k in name for k in ("bias", "learnable", "temperature", "query_embedding")):
                p.normal_(0, 0.5)


def run_block(attn, x, backend, monkeypatch):
    monkeypatch.setenv("BACKBONES_KERNELS", backend)
    x = x.detach().requires_grad_()
    out = attn(x)
    assert attn.last_kernel == backend
    params = [x] + list(attn.parameters())
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
    return out, torch.autograd.grad(out, params, grad)


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_block_end_to_end(case, monkeypatch):
    kwargs, b, h, w = BLOCK_CASES[case]
    torch.manual_seed(0)
    attn = AggregatedAttention(48, num_heads=2, **kwargs).to(DEVICE)
    _randomize(attn)
    x = torch.randn(b, h, w, 48, device=DEVICE)
    out_t, grads_t = run_block(attn, x, "torch", monkeypatch)
    out_k, grads_k = run_block(attn, x, "triton", monkeypatch)
    assert_close_scaled(out_k, out_t, 1e-5, "out")
    names = ["x"] + [n for n, _ in attn.named_parameters()]
    assert {"temperature", "cpb_fc1.weight", "pool_norm.weight", "learnable_tokens"} <= set(names)
    for name, a, r in zip(names, grads_k, grads_t):
        assert_close_scaled(a, r, 2e-5, f"grad {name}")


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_block_under_autocast(dtype, tol, monkeypatch):
    """Under autocast the block hands the kernel queries in the autocast dtype (F.normalize had promoted them)."""
    torch.manual_seed(0)
    attn = AggregatedAttention(48, num_heads=2, pool_ratio=4, pretrain_grid=8).to(DEVICE)
    _randomize(attn)
    x = torch.randn(1, 9, 7, 48, device=DEVICE)
    out_32, grads_32 = run_block(attn, x, "torch", monkeypatch)
    with torch.autocast(DEVICE, dtype=dtype):
        out_amp, _ = run_block(attn, x, "torch", monkeypatch)
        out, grads = run_block(attn, x, "triton", monkeypatch)
    assert out.dtype == out_amp.dtype
    assert_close_scaled(out, out_amp, tol, "out vs torch autocast")
    assert_close_scaled(out, out_32, tol, "out vs fp32")
    names = ["x"] + [n for n, _ in attn.named_parameters()]
    for name, a, r in zip(names, grads, grads_32):
        assert_close_scaled(a, r, 4 * tol, f"grad {name} vs fp32")


def test_dispatch_auto_on_cpu_is_torch(monkeypatch):
    attn = AggregatedAttention(48, num_heads=2, pool_ratio=2)
    monkeypatch.setenv("BACKBONES_KERNELS", "auto")
    attn(torch.randn(1, 3, 4, 48))
    assert attn.last_kernel == "torch"  # CPU tensors: PyTorch in auto mode, interpreter or not


def test_dispatch_forced_unsupported_raises(monkeypatch):
    attn = AggregatedAttention(48, num_heads=2, pool_ratio=2, attn_drop=0.1).to(DEVICE)
    x = torch.randn(1, 3, 4, 48, device=DEVICE)
    monkeypatch.setenv("BACKBONES_KERNELS", "triton")
    with pytest.raises(RuntimeError, match=r"attn_drop=0\.1 in training mode"):
        attn.train()(x)
    with pytest.raises(RuntimeError, match="float64"):
        AggregatedAttention(48, num_heads=2).double().to(DEVICE)(x.double())
    attn.eval()(x)  # dropout is inactive in eval mode: the kernel serves it
    assert attn.last_kernel == "triton"
    if DEVICE == "cuda":
        monkeypatch.setenv("BACKBONES_KERNELS", "auto")
        attn.train()(x)
        assert attn.last_kernel == "torch"  # auto: unsupported option -> PyTorch


def test_kernel_module_is_imported_lazily():
    """The block imports its kernel module only when the kernel runs (``triton`` itself may come in through
    torch / timm internals, so the check is on the kernel module)."""
    code = (
        "import sys, torch, backbones; from backbones.blocks.aggregated_attention import AggregatedAttention;"
        "AggregatedAttention(48, num_heads=2)(torch.randn(1, 3, 3, 48));"
        "assert 'backbones.kernels.aggregated_attention' not in sys.modules, 'kernel module imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"BACKBONES_KERNELS": "auto", "PATH": ""})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 6e-2)])
def test_cuda_auto_picks_triton_and_matches(dtype, tol, monkeypatch):
    torch.manual_seed(0)
    ref_attn = AggregatedAttention(48, num_heads=2, pool_ratio=4, pretrain_grid=8).cuda()
    _randomize(ref_attn)
    attn = AggregatedAttention(48, num_heads=2, pool_ratio=4, pretrain_grid=8).cuda().to(dtype)
    attn.load_state_dict(ref_attn.state_dict())
    x = torch.randn(2, 13, 11, 48, device="cuda")
    out_ref, grads_ref = run_block(ref_attn, x, "torch", monkeypatch)  # fp32 PyTorch path
    monkeypatch.setenv("BACKBONES_KERNELS", "auto")
    xk = x.to(dtype).requires_grad_()
    out = attn(xk)
    assert attn.last_kernel == "triton"
    params = [xk] + list(attn.parameters())
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out)
    grads = torch.autograd.grad(out, params, grad)
    assert_close_scaled(out, out_ref, tol, "out")
    names = ["x"] + [n for n, _ in attn.named_parameters()]
    for name, a, r in zip(names, grads, grads_ref):
        assert_close_scaled(a, r, tol * 4, f"grad {name}")
