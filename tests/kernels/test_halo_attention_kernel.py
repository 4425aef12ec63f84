"""The fused Triton halo-attention kernel (backbones.kernels.halo_attention) against HaloAttention's PyTorch path.

Without a GPU the kernels run under Triton's interpreter on CPU tensors (tests/conftest.py turns it on); with a GPU
the same tests run on CUDA tensors. The
kernel's inputs are captured from the block itself (so they carry its padding, its -inf masks and its layouts) and
the reference is the block's own PyTorch attention on the gathered windows (``_HaloSoftmaxAttention``, itself
tested against a naive per-query reference in tests/blocks/test_halo_attention.py).

bf16: Triton's interpreter computes ``tl.dot`` on bf16 operands wrongly, so under the interpreter the kernel widens
bf16 operands to fp32 right before each product (exact: the same products); bf16 loads, stores, the casts of P and
dS and everything else run as on a GPU. The native bf16 dot is covered by the CUDA test only.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from backbones.blocks import HaloAttention
from backbones.blocks.halo_attention import _HaloSoftmaxAttention
from backbones.kernels import interpreter_enabled, triton_available

if not triton_available():
    pytest.skip("needs Triton", allow_module_level=True)
import backbones.kernels.halo_attention as halo_kernels  # noqa: E402  (imports Triton)

DEVICE = "cpu" if interpreter_enabled() else "cuda" if torch.cuda.is_available() else None
needs_kernel_device = pytest.mark.skipif(DEVICE is None, reason="needs CUDA or TRITON_INTERPRET=1")

# (constructor kwargs, batch, H, W): odd sizes padded to a multiple of b, stride 2 with strided queries (even b) and
# with the average pool (odd b / avg_down), halo 0, d_qk != d_v (with bias and scaled position logits), and
# windows / blocks big enough for several row tiles (w = 11 -> 3 tiles of 4 rows) and two query tiles (L = 81).
CASES = [
    (dict(dim=16, num_heads=2, block_size=4, halo_size=1), 2, 7, 9),
    (dict(dim=16, num_heads=2, block_size=4, halo_size=1, stride=2), 1, 7, 10),
    (dict(dim=16, num_heads=2, block_size=3, halo_size=1, stride=2), 1, 7, 8),
    (dict(dim=16, num_heads=2, block_size=4, halo_size=0, stride=2, avg_down=True), 1, 8, 6),
    (
        dict(dim=16, dim_out=24, num_heads=2, dim_head=5, block_size=4, halo_size=2, qkv_bias=True,
             scale_pos_embed=True),
        2, 6, 9,
    ),
    (dict(dim=16, num_heads=1, block_size=9, halo_size=1), 1, 9, 9),
]  # fmt: skip
IDS = ["odd-size", "stride2-strided-q", "stride2-odd-b-pool", "halo0-avg-down", "dqk!=dv", "tiles"]


class _Captured(Exception):
    pass


def _module(kwargs: dict, mask_padding: bool) -> HaloAttention:
    torch.manual_seed(0)
    m = HaloAttention(**kwargs, mask_padding=mask_padding, device=DEVICE)
    with torch.no_grad():  # non-trivial relative logits and biases
        m.pos_embed.height_rel.normal_()
        m.pos_embed.width_rel.normal_()
        for conv in (m.q, m.kv):
            if conv.bias is not None:
                conv.bias.normal_()
    return m


def _kernel_inputs(m: HaloAttention, x: torch.Tensor, monkeypatch) -> tuple:
    """The block's arguments to the kernel: (q, kv_map, rel_h, rel_w, block, d_qk, scale), tensors detached."""
    captured = []

    def spy(*args):
        captured.append(args)
        raise _Captured

    with monkeypatch.context() as patch:
        patch.setenv("BACKBONES_KERNELS", "triton")
        patch.setattr(halo_kernels, "halo_attention", spy)
        with torch.no_grad(), pytest.raises(_Captured):
            m(x)
    q, kv_map, rel_h, rel_w, block, d_qk, scale = captured[0]
    return (q.clone(), kv_map.clone(), rel_h.clone(), rel_w.clone(), block, d_qk, scale)


def _reference(m: HaloAttention, q, kv_map, rel_h, rel_w, block, d_qk, scale):
    """The block's PyTorch attention: windows gathered from the padded map, then ``_HaloSoftmaxAttention``."""
    groups, hp, wp, channels = kv_map.shape
    win = rel_h.shape[-1]
    nh, nw = (hp - win) // block + 1, (wp - win) // block + 1
    kv = kv_map.reshape(groups, -1, channels).index_select(1, m._window_index(nh, nw, wp, kv_map.device))
    kv = kv.view(-1, win * win, channels)
    return _HaloSoftmaxAttention.apply(q, kv[..., :d_qk], kv[..., d_qk:], rel_h, rel_w, scale)


def _run(fn, tensors, grad_out):
    leaves = [t.detach().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return [out.detach()] + list(grads)


def _assert_close(ours, ref, tol, what):
    """|ours - ref| <= tol * max|ref| elementwise (NaN anywhere fails)."""
    scale = ref.abs().max().item() or 1.0
    err = (ours.float() - ref.float()).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"


@pytest.fixture(scope="module", params=[pytest.param(c, id=i) for c, i in zip(CASES, IDS)])
def case(request):
    return request.param


@needs_kernel_device
@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
def test_kernel_matches_torch_path(case, mask_padding, monkeypatch):
    """Forward and the gradients of q, the padded kv map, rel_h and rel_w; fp32 tight, fp16 / bf16 loose (against
    fp32 math on the same rounded inputs)."""
    kwargs, batch, H, W = case
    m = _module(kwargs, mask_padding)
    x = torch.randn(batch, kwargs["dim"], H, W, device=DEVICE)
    q, kv_map, rel_h, rel_w, block, d_qk, scale = _kernel_inputs(m, x, monkeypatch)
    if mask_padding and (H % block or W % block or m.halo_size):
        assert torch.isinf(rel_h).any() or torch.isinf(rel_w).any(), "the case should hold masked keys"
    grad_out = torch.randn(q.shape[0], q.shape[1], m.dim_head_v, device=DEVICE)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 5e-3), (torch.bfloat16, 5e-2)):
        tensors = [t.to(dtype) for t in (q, kv_map, rel_h, rel_w)]
        ours = _run(lambda *t: halo_kernels.halo_attention(*t, block, d_qk, scale), tensors, grad_out.to(dtype))
        ref = _run(
            lambda *t: _reference(m, *t, block, d_qk, scale), [t.float() for t in tensors], grad_out.to(dtype).float()
        )
        assert ours[0].dtype == dtype and all(g.dtype == dtype for g in ours[1:])
        for name, a, b in zip(["out", "grad q", "grad kv map", "grad rel_h", "grad rel_w"], ours, ref):
            assert a.shape == b.shape, name
            _assert_close(a, b, tol, f"{dtype} {name}")


@needs_kernel_device
def test_kernel_tf32_tiles(monkeypatch):
    """fp32 with TF32 allowed takes other tiles (64 queries, tensor-core dots); under the interpreter the dots stay
    exact fp32, on a GPU they round the operands to TF32 (looser)."""
    kwargs, batch, H, W = CASES[-1]  # 81 queries: two query tiles of 64 forward, three of 32 backward
    m = _module(kwargs, True)
    x = torch.randn(batch, kwargs["dim"], H, W, device=DEVICE)
    inputs = _kernel_inputs(m, x, monkeypatch)
    tensors, args = inputs[:4], inputs[4:]
    grad_out = torch.randn(*inputs[0].shape[:2], m.dim_head_v, device=DEVICE)
    ref = _run(lambda *t: _reference(m, *t, *args), tensors, grad_out)
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert halo_kernels._config(81, m.window_size, 16, 16, torch.float32, backward=False)["PRECISION"] == "tf32"
        ours = _run(lambda *t: halo_kernels.halo_attention(*t, *args), tensors, grad_out)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    for name, a, b in zip(["out", "grad q", "grad kv map", "grad rel_h", "grad rel_w"], ours, ref):
        _assert_close(a, b, 1e-5 if DEVICE == "cpu" else 3e-3, f"tf32 {name}")


@needs_kernel_device
@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
def test_block_end_to_end_torch_vs_triton(case, mask_padding, monkeypatch):
    """The same block run with BACKBONES_KERNELS=torch and =triton: outputs (with and without autograd) and the
    gradients of the input and of every parameter (projections and relative-position tables) agree."""
    kwargs, batch, H, W = case
    m = _module(kwargs, mask_padding)
    x = torch.randn(batch, kwargs["dim"], H, W, device=DEVICE)
    stride = kwargs.get("stride", 1)
    weight = torch.randn(batch, m.num_heads * m.dim_head_v, math.ceil(H / stride), math.ceil(W / stride), device=DEVICE)
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("BACKBONES_KERNELS", backend)
        m.zero_grad()
        xg = x.clone().requires_grad_()
        out = m(xg)
        assert m.last_kernel == backend
        (out * weight).sum().backward()
        with torch.no_grad():
            inference = m(x)
        assert m.last_kernel == backend
        results[backend] = [out.detach(), inference, xg.grad] + [p.grad.clone() for p in m.parameters()]
    names = ["out", "no-grad out", "x"] + [n for n, _ in m.named_parameters()]
    for name, ours, ref in zip(names, results["triton"], results["torch"], strict=True):
        # relative to the tensor's largest value: some gradients sum many terms that nearly cancel (e.g. the key
        # bias's, exactly 0 in exact arithmetic when padded keys are masked)
        _assert_close(ours, ref, 1e-5, name)


def test_auto_mode_uses_torch_on_cpu(monkeypatch):
    monkeypatch.delenv("BACKBONES_KERNELS", raising=False)
    m = HaloAttention(16, num_heads=2, block_size=4, halo_size=1)
    assert m.last_kernel is None
    m(torch.randn(1, 16, 5, 5))
    assert m.last_kernel == "torch"


@pytest.mark.parametrize(
    "kwargs,dtype,reason",
    [
        (dict(dim=16, num_heads=2, block_size=4, halo_size=1), torch.float64, "dtype torch.float64"),
        (dict(dim=8, dim_out=8, num_heads=1, dim_head=264, block_size=2, halo_size=1), torch.float32, "head widths"),
    ],
    ids=["float64", "wide-heads"],
)
@needs_kernel_device
def test_forced_triton_unsupported_raises(kwargs, dtype, reason, monkeypatch):
    m = HaloAttention(**kwargs, device=DEVICE, dtype=dtype)
    x = torch.randn(1, kwargs["dim"], 4, 4, dtype=dtype, device=DEVICE)
    monkeypatch.setenv("BACKBONES_KERNELS", "auto")
    m(x)
    assert m.last_kernel == "torch"  # CPU tensors, or the unsupported option on CUDA
    monkeypatch.setenv("BACKBONES_KERNELS", "triton")
    with pytest.raises(RuntimeError, match=reason):
        m(x)


def test_kernel_rejects_inconsistent_shapes():
    q = torch.randn(4, 16, 8)
    rel = torch.randn(4, 16, 6)
    with pytest.raises(ValueError, match="window"):
        halo_kernels.halo_attention(q, torch.randn(1, 11, 10, 16), rel, rel, 4, 8, 1.0)
    with pytest.raises(ValueError, match="blocks"):
        halo_kernels.halo_attention(q, torch.randn(1, 10, 14, 16), rel, rel, 4, 8, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
def test_cuda_auto_mode_uses_triton_and_matches_torch(dtype, tol, mask_padding, monkeypatch):
    """On CUDA the default (auto) picks the kernel and matches the PyTorch path, forward and backward.

    Every output and gradient is compared with the PyTorch path run in fp32 on the same (rounded) weights and input,
    within ``tol`` relative to the largest value; the outputs also with the PyTorch path in the same low precision
    (2 * tol). Low-precision gradients are not compared with the low-precision PyTorch path directly: its backward
    runs the softmax in fp16 / bf16 and is itself several % off (measured on CPU), more than the kernel."""
    kwargs = dict(dim=32, dim_out=48, num_heads=2, dim_head=8, block_size=8, halo_size=3, qkv_bias=True)
    for stride in (1, 2):
        m = _module(dict(kwargs, stride=stride), mask_padding).cuda().to(dtype)
        m32 = copy.deepcopy(m).float()
        x = torch.randn(2, 32, 21, 27, device="cuda").to(dtype)
        weight = torch.randn(2, 48, math.ceil(21 / stride), math.ceil(27 / stride), device="cuda").to(dtype)
        results = {}
        for backend, module, inp in (("auto", m, x), ("torch", m, x), ("ref", m32, x.float())):
            monkeypatch.setenv("BACKBONES_KERNELS", "torch" if backend == "ref" else backend)
            module.zero_grad()
            xg = inp.clone().requires_grad_()
            out = module(xg)
            assert module.last_kernel == ("triton" if backend == "auto" else "torch")
            (out * weight.to(out.dtype)).sum().backward()
            with torch.no_grad():
                inference = module(inp)
            results[backend] = [out.detach(), inference, xg.grad] + [p.grad for p in module.parameters()]
        names = ["out", "no-grad out", "x"] + [n for n, _ in m.named_parameters()]
        for i, (name, ours, torch_lowp, ref) in enumerate(
            zip(names, results["auto"], results["torch"], results["ref"], strict=True)
        ):
            assert ours.dtype == dtype, name
            _assert_close(ours, ref, tol, f"stride {stride} {name} vs fp32")
            if i < 2:
                _assert_close(ours, torch_lowp, 2 * tol, f"stride {stride} {name} vs torch {dtype}")
