"""The fused routed-attention kernel (BiFormer) against the block's own PyTorch path, forward and backward.

Without a GPU the kernels run on CPU tensors under Triton's interpreter (tests/conftest.py turns it on), which is
slow: shapes are tiny. Triton's interpreter multiplies bf16 tiles wrongly in ``tl.dot``, so there (only there) the
kernel widens bf16 tiles to fp32 for the products; every bf16 load, store and cast is still exercised.
"""

from __future__ import annotations

import pytest
import torch

from backbones.blocks.bilevel_routing_attention import BiLevelRoutingAttention, _routed_attention_chunks

ENV = "BACKBONES_KERNELS"
LOW_TOL = {torch.float16: 2e-2, torch.bfloat16: 6e-2}  # relative to the reference's largest magnitude


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """|actual - expected| <= rel * max|expected| (+ a tiny floor), elementwise."""
    scale = expected.abs().max().item() + 1e-6
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * {scale:.3g}"


def _routing(nb_per_image: int, batch: int, topk: int, seed: int) -> torch.Tensor:
    """(B * R, topk) global rows: each query region routes inside its own image, distinct regions per row, with
    some key regions shared by several query regions and some routed by none."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        for _ in range(nb_per_image):
            # bias towards low region indices: region 0 of every image is routed by nearly everyone
            scores = torch.rand(nb_per_image, generator=g) + torch.linspace(1.0, 0.0, nb_per_image)
            scores[0] = float("inf")  # first slot: region 0, which always has a valid key
            rows.append(scores.argsort(descending=True)[:topk] + b * nb_per_image)
    return torch.stack(rows)


# (name, batch, regions per image, n, n_kv, topk, heads, qk_dim, C, mask, weight)
#   mask: None | "sdpa" (N, 1, 1, topk * n_kv) | "compact" (N, n_kv) per key region
OP_CASES = [
    ("plain", 2, 4, 9, 9, 2, 2, 16, 16, None, False),
    ("sdpa-mask+soft", 2, 4, 9, 9, 3, 2, 16, 16, "sdpa", True),
    ("compact-mask", 2, 4, 12, 12, 4, 2, 48, 48, "compact", False),  # head dim 24, all regions routed
    ("qk!=v,n_kv<n", 1, 4, 16, 6, 2, 2, 16, 48, "sdpa", True),  # d_qk 8, d_v 24
    ("topk1,multi-tile", 2, 2, 70, 70, 1, 1, 8, 8, "compact", True),  # 2 query and 2 key tiles of 64
]


def _op_inputs(case, dtype):
    _, batch, regions, n, n_kv, topk, heads, qk, c, mask_kind, soft = case
    g = torch.Generator().manual_seed(1)
    nb = batch * regions
    q = torch.randn(nb, n, qk, generator=g).to(dtype)
    kv = torch.randn(nb, n_kv, qk + c, generator=g).to(dtype)
    rows = _routing(regions, batch, topk, seed=2)
    key_valid = torch.rand(nb, n_kv, generator=g) > 0.35
    key_valid[:, 0] = True  # every region keeps a valid key ...
    key_valid[nb - 1] = False  # ... but one, wholly padding (all its keys masked wherever it is routed)
    if mask_kind == "sdpa":
        mask = key_valid[rows].view(nb, 1, 1, topk * n_kv)
    elif mask_kind == "compact":
        mask = key_valid
    else:
        mask = None
    sdpa_mask = None if mask is None else key_valid[rows].view(nb, 1, 1, topk * n_kv)
    weight = torch.softmax(torch.randn(nb, topk, generator=g), -1) if soft else None
    grad = torch.randn(nb, n, c, generator=g).to(dtype)
    return q, kv, rows, mask, sdpa_mask, weight, grad, heads, qk, qk**-0.5


def _run(fn, q, kv, weight, grad):
    q, kv = q.detach().requires_grad_(), kv.detach().requires_grad_()
    inputs = [q, kv]
    if weight is not None:
        weight = weight.detach().requires_grad_()
        inputs.append(weight)
    out = fn(q, kv, weight)
    return out, torch.autograd.grad(out, inputs, grad)


# every case in fp32; low precision (looser) on two cases only, the interpreter is slow
OP_PARAMS = [pytest.param(c, torch.float32, id=f"{c[0]}-fp32") for c in OP_CASES] + [
    pytest.param(c, dt, id=f"{c[0]}-{str(dt)[6:]}")
    for c in OP_CASES
    if c[0] in ("sdpa-mask+soft", "qk!=v,n_kv<n")
    for dt in (torch.float16, torch.bfloat16)
]


@pytest.mark.parametrize("case, dtype", OP_PARAMS)
def test_op_matches_torch_path(case, dtype):
    from backbones.kernels.routed_attention import routed_attention

    q, kv, rows, mask, sdpa_mask, weight, grad, heads, qk, scale = _op_inputs(case, dtype)
    out, grads = _run(
        lambda a, b, w: routed_attention(a, b, rows, mask, heads, qk, scale, weight=w), q, kv, weight, grad
    )
    assert out.dtype == dtype and all(g.dtype == t.dtype for g, t in zip(grads, (q, kv, weight)) if t is not None)
    # Reference: the block's PyTorch path in fp32 on the same inputs (rounded to dtype first for fp16 / bf16).
    ref, ref_grads = _run(
        lambda a, b, w: _routed_attention_chunks(a, b, rows, sdpa_mask, w, heads, qk, scale),
        q.float(),
        kv.float(),
        weight,
        grad.float(),
    )
    rel = 1e-5 if dtype == torch.float32 else LOW_TOL[dtype]
    _close(out, ref, rel, "out")
    for name, g, r in zip(("dq", "dkv", "dweight"), grads, ref_grads):
        _close(g, r, rel, name)
    # keys of the all-padding region get no gradient (masked everywhere); regions nobody routed to get zeros
    if mask is not None:
        assert grads[1][-1].abs().max() == 0
    unrouted = torch.ones(q.shape[0], dtype=torch.bool)
    unrouted[rows.flatten()] = False
    if unrouted.any():
        assert grads[1][unrouted].abs().max() == 0


def test_dkv_is_deterministic_with_shared_regions():
    """Key regions routed by several query regions (their dK/dV, a sum over those, is checked against the torch
    path above): the inverse-routing backward uses no atomics, so gradients are bit-identical run to run."""
    from backbones.kernels.routed_attention import routed_attention

    q, kv, rows, mask, sdpa_mask, weight, grad, heads, qk, scale = _op_inputs(OP_CASES[1], torch.float32)
    assert torch.bincount(rows.flatten()).max() >= 3  # region 0 of each image is in every row of that image
    runs = [
        _run(lambda a, b, w: routed_attention(a, b, rows, mask, heads, qk, scale, weight=w), q, kv, weight, grad)
        for _ in range(2)
    ]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


def test_op_rejects_bad_arguments():
    from backbones.kernels.routed_attention import routed_attention

    q, kv, rows = torch.randn(2, 4, 8), torch.randn(2, 4, 16), torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="mask"):
        routed_attention(q, kv, rows, torch.ones(2, 5, dtype=torch.bool), 2, 8, 0.3)
    with pytest.raises(TypeError, match="dtype"):
        routed_attention(q.double(), kv.double(), rows, None, 2, 8, 0.3)
    with pytest.raises(ValueError, match="divisible"):
        routed_attention(q, kv, rows, None, 3, 8, 0.3)


# ---------------------------------------------------------------------------------------------------------------
# The block end to end: one instance, BACKBONES_KERNELS=torch then triton.

# (name, input (B, H, W), block kwargs)
BLOCK_CASES = [
    # 4 x 7 with S = 3: regions of 2 x 3, the last region row wholly padding (routed, all keys masked)
    ("odd-masked-topkS2", (1, 4, 7), dict(num_regions=3, topk=9, mask_padding=True)),
    ("odd-official", (2, 7, 11), dict(num_regions=3, topk=2, mask_padding=False)),
    (
        "ada_avgpool-masked",
        (1, 11, 10),
        dict(num_regions=2, topk=3, kv_downsample_mode="ada_avgpool", kv_per_region=2, mask_padding=True),
    ),
    ("topk1-qk24", (2, 6, 6), dict(num_regions=3, topk=1, qk_dim=48)),  # d_qk 24, d_v 8
    (
        "soft-routing",
        (1, 8, 9),
        dict(num_regions=3, topk=3, routing_weight=True, routing_grad=True, routing_proj=True, mask_padding=True),
    ),
]


def _block(dim=16, heads=2, **kwargs) -> BiLevelRoutingAttention:
    torch.manual_seed(0)
    attn = BiLevelRoutingAttention(dim, heads, **kwargs)
    with torch.no_grad():  # non-trivial biases: padded tokens carry them in the official mode
        for p in attn.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.5)
    return attn


def _block_run(attn, x, g):
    x = x.detach().requires_grad_()
    y = attn(x)
    return y, torch.autograd.grad(y, [x, *attn.parameters()], g)


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_block_triton_matches_torch(case, monkeypatch):
    _, (b, h, w), kwargs = case
    attn = _block(**kwargs)
    x = torch.randn(b, h, w, 16)
    g = torch.randn(b, h, w, 16)
    monkeypatch.setenv(ENV, "torch")
    y_ref, grads_ref = _block_run(attn, x, g)
    assert attn.last_kernel == "torch"
    monkeypatch.setenv(ENV, "triton")
    y, grads = _block_run(attn, x, g)
    assert attn.last_kernel == "triton"
    names = ["x"] + [n for n, _ in attn.named_parameters()]
    _close(y, y_ref, 1e-5, "output")
    for name, a, r in zip(names, grads, grads_ref):
        _close(a, r, 1e-5, f"grad {name}")
    if kwargs.get("routing_proj"):
        assert grads[names.index("routing_proj.weight")].abs().sum() > 0  # gradient reached the router
    with torch.no_grad():  # the no-grad path of the block dispatches too
        _close(attn(x), y_ref, 1e-5, "no-grad output")
    assert attn.last_kernel == "triton"


def test_block_bf16_autocast_uses_kernel(monkeypatch):
    """Low-precision q/kv from the block (CPU autocast bf16) through the kernel, forward and backward."""
    attn = _block(num_regions=2, topk=2, mask_padding=True)
    x = torch.randn(1, 7, 6, 16)
    g = torch.randn(1, 7, 6, 16)
    monkeypatch.setenv(ENV, "torch")
    y_ref, grads_ref = _block_run(attn, x, g)  # fp32 reference
    monkeypatch.setenv(ENV, "triton")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, grads = _block_run(attn, x, g)
    assert attn.last_kernel == "triton"
    _close(y, y_ref, 0.1, "bf16 output")
    for a, r in zip(grads, grads_ref):
        _close(a, r, 0.1, "bf16 grad")


def test_dispatch(monkeypatch):
    attn = _block(num_regions=2, topk=2)
    x = torch.randn(1, 4, 4, 16)
    monkeypatch.delenv(ENV, raising=False)
    with torch.no_grad():
        attn(x)
    assert attn.last_kernel == "torch"  # auto: CPU tensors take PyTorch
    monkeypatch.setenv(ENV, "triton")
    with pytest.raises(RuntimeError, match="float64"):
        attn.double()(x.double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_cuda_auto_picks_triton_and_matches(case, dtype, monkeypatch):
    _, (b, h, w), kwargs = case
    attn = _block(**kwargs).cuda()
    x = torch.randn(b, h, w, 16, device="cuda")
    g = torch.randn(b, h, w, 16, device="cuda")
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):  # low-precision q / kv
            monkeypatch.setenv(ENV, "torch")
            y_ref, grads_ref = _block_run(attn, x, g)
            monkeypatch.delenv(ENV, raising=False)
            y, grads = _block_run(attn, x, g)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    assert attn.last_kernel == "triton"
    rel = 1e-5 if dtype == torch.float32 else LOW_TOL[dtype]
    _close(y, y_ref, rel, "output")
    for a, r in zip(grads, grads_ref):
        _close(a, r, rel, "grad")
