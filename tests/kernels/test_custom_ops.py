"""The Triton kernels as PyTorch custom operators (``backbones::*``): opcheck, and the ops inside captured graphs.

``torch.library.opcheck`` checks each operator's schema, its fake (meta) implementation against the real one, its
registered autograd and its behaviour under AOT dispatch with static and dynamic shapes. Then each dispatching
block, with ``BACKBONES_KERNELS=triton``, goes through ``torch.compile(fullgraph=True)`` and ``torch.export``: the
captured graph must hold the kernel's custom op (not a fallback to the PyTorch path), and its outputs and gradients
must match the block's PyTorch path (itself tested against naive references in tests/blocks/). Without a GPU the
kernels run on CPU tensors under Triton's interpreter (tests/conftest.py), with one on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch

from backbones.kernels import ENV_VAR, interpreter_enabled, triton_available

DEVICE = "cpu" if interpreter_enabled() else "cuda" if torch.cuda.is_available() else None
pytestmark = pytest.mark.skipif(
    DEVICE is None or not triton_available(), reason="needs Triton, and CUDA or TRITON_INTERPRET=1"
)


def _randn(*shape, requires_grad=True):
    return torch.randn(*shape, device=DEVICE).requires_grad_(requires_grad)


def _halo_args():
    import backbones.kernels.halo_attention  # noqa: F401  (registers the ops)

    groups, block, halo, d_qk, d_v, nh, nw = 2, 4, 1, 8, 6, 2, 3
    win = block + 2 * halo
    n, length = groups * nh * nw, block * block
    kv_map = _randn(groups, (nh - 1) * block + win, (nw - 1) * block + win, d_qk + d_v)
    rel_h, rel_w = _randn(n, length, win), _randn(n, length, win)
    return torch.ops.backbones.halo_attention, (_randn(n, length, d_qk), kv_map, rel_h, rel_w, block, d_qk, 0.35)


def _routed_args(soft: bool, masked: bool):
    from backbones.kernels.routed_attention import _mask_args

    nb, n, n_kv, heads, qk, c, topk = 6, 5, 3, 2, 8, 12, 2
    rows = torch.randint(0, nb, (nb, topk), device=DEVICE)
    mask = None
    if masked:
        key_valid = torch.rand(nb, n_kv, device=DEVICE) > 0.3
        key_valid[:, 0] = True
        mask = key_valid
    mask_u8, strides = _mask_args(mask, nb, topk, n_kv)
    weight = torch.softmax(torch.randn(nb, topk, device=DEVICE), -1).requires_grad_() if soft else None
    args = (_randn(nb, n, qk), _randn(nb, n_kv, qk + c), weight, rows, mask_u8, list(strides), heads, qk, qk**-0.5)
    return torch.ops.backbones.routed_attention, args


def _aggregated_args():
    import backbones.kernels.aggregated_attention  # noqa: F401  (registers the ops)

    b, h, w, heads, hd, ws, pooled = 1, 4, 5, 2, 8, 3, 3
    args = (
        _randn(b, h, w, heads, hd), _randn(b, h, w, heads, hd), _randn(b, h, w, heads, hd),
        _randn(b, heads, pooled, hd), _randn(b, heads, pooled, hd), _randn(heads, h * w, pooled),
        _randn(heads, ws * ws), _randn(b, h, w, heads, ws * ws), ws,
    )  # fmt: skip
    return torch.ops.backbones.aggregated_attention, args


FORWARD_CASES = {
    "halo": _halo_args,
    "routed": lambda: _routed_args(soft=False, masked=False),
    "routed-soft-masked": lambda: _routed_args(soft=True, masked=True),
    "aggregated": _aggregated_args,
}


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_opcheck_forward_ops(case):
    """Schema, fake vs real, registered autograd, AOT dispatch (static and dynamic shapes, forward and backward)."""
    op, args = FORWARD_CASES[case]()
    torch.library.opcheck(op.default, args)


def _detached(args):
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


def test_opcheck_backward_ops():
    """The backward operators on their own (their fake implementations against the real outputs)."""
    op, args = _halo_args()
    out, lse = op(*args)
    q, kv_map, rel_h, rel_w, block, d_qk, scale = _detached(args)
    grad_out = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.backbones.halo_attention_backward.default,
        (grad_out, q, kv_map, rel_h, rel_w, out.detach(), lse, block, d_qk, scale),
    )

    op, args = _routed_args(soft=True, masked=True)
    out, lse = op(*args)
    q, kv, weight, rows, mask, strides, heads, qk, scale = _detached(args)
    grad_out = torch.randn_like(out)
    delta = (grad_out * out.detach()).view(*out.shape[:2], heads, -1).sum(-1).transpose(1, 2).contiguous()
    common = (grad_out, q, kv, weight, rows, mask, lse, delta, strides, heads, qk, scale)
    for need_dw in (True, False):
        torch.library.opcheck(torch.ops.backbones.routed_attention_backward_dq.default, (*common, need_dw))
    torch.library.opcheck(torch.ops.backbones.routed_attention_backward_dkdv.default, common)

    op, args = _aggregated_args()
    out, lse = op(*args)
    *tensors, ws = _detached(args)
    torch.library.opcheck(
        torch.ops.backbones.aggregated_attention_backward.default,
        (torch.randn_like(out), *tensors, out.detach(), lse, ws),
    )


# --- the ops inside whole blocks' captured graphs ---------------------------------------------------------------


def _block(name):
    from backbones.blocks import AggregatedAttention, BiLevelRoutingAttention, HaloAttention

    torch.manual_seed(0)
    # odd sizes: padded regions / partial windows, masked keys
    if name == "BiLevelRoutingAttention":
        return BiLevelRoutingAttention(16, num_heads=2, num_regions=3, topk=2, device=DEVICE), (2, 13, 11, 16)
    if name == "AggregatedAttention":
        return AggregatedAttention(16, num_heads=2, pool_ratio=4, device=DEVICE), (2, 13, 11, 16)
    block = HaloAttention(16, num_heads=2, block_size=4, halo_size=1, device=DEVICE)
    with torch.no_grad():
        block.pos_embed.height_rel.normal_()
        block.pos_embed.width_rel.normal_()
    return block, (2, 16, 13, 11)


BLOCK_OPS = {
    "BiLevelRoutingAttention": "backbones.routed_attention.default",
    "AggregatedAttention": "backbones.aggregated_attention.default",
    "HaloAttention": "backbones.halo_attention.default",
}


class _RecordGraphs:
    """A torch.compile backend that keeps the FX graphs dynamo captured and runs them as they are."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def _targets(graph) -> set[str]:
    return {str(node.target) for node in graph.nodes if node.op == "call_function"}


def _torch_path(block, x, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    x = x.detach().requires_grad_()
    out = block(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert block.last_kernel == "torch"
    return out.detach(), grad


@pytest.mark.parametrize("name", list(BLOCK_OPS))
def test_block_compiles_with_the_kernel_op_in_the_graph(name, monkeypatch):
    import torch._dynamo

    block, shape = _block(name)
    x = torch.randn(shape, device=DEVICE)
    ref, ref_grad = _torch_path(block, x, monkeypatch)

    monkeypatch.setenv(ENV_VAR, "triton")
    torch._dynamo.reset()  # the choice is made at trace time
    backend = _RecordGraphs()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    xg = x.clone().requires_grad_()
    out = compiled(xg)
    (grad,) = torch.autograd.grad(out.square().sum(), xg)
    assert block.last_kernel == "triton"
    assert len(backend.graphs) == 1 and BLOCK_OPS[name] in _targets(backend.graphs[0].graph)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4 * ref_grad.abs().max().item())


@pytest.mark.parametrize("name", list(BLOCK_OPS))
def test_block_exports_with_the_kernel_op_in_the_graph(name, monkeypatch):
    block, shape = _block(name)
    block.eval()
    x = torch.randn(shape, device=DEVICE)
    ref, _ = _torch_path(block, x, monkeypatch)
    monkeypatch.setenv(ENV_VAR, "triton")
    program = torch.export.export(block, (x,))
    assert BLOCK_OPS[name] in _targets(program.graph)
    # the PyTorch path's own ops are not there: no fallback was traced
    assert not any("index_select" in t or "flash_attention" in t for t in _targets(program.graph))
    torch.testing.assert_close(program.module()(x), ref, rtol=1e-4, atol=1e-5)


def test_routed_entry_exports_with_symbolic_sizes():
    """The fake implementations and the entry checks keep every size symbolic (no specialisation)."""
    from backbones.blocks.bilevel_routing_attention import _routed_attention_chunks
    from backbones.kernels.routed_attention import routed_attention

    class Routed(torch.nn.Module):
        def forward(self, q, kv, rows, mask):
            return routed_attention(q, kv, rows, mask, 2, 8, 0.3)

    def inputs(nb, n, n_kv):
        mask = torch.rand(nb, n_kv, device=DEVICE) > 0.2
        mask[:, 0] = True
        rows = torch.randint(0, nb, (nb, 2), device=DEVICE)
        return torch.randn(nb, n, 8, device=DEVICE), torch.randn(nb, n_kv, 20, device=DEVICE), rows, mask

    regions, queries, keys = torch.export.Dim("regions", min=2), torch.export.Dim("n", min=2), torch.export.Dim("kv")
    dynamic = {
        "q": {0: regions, 1: queries},
        "kv": {0: regions, 1: keys},
        "rows": {0: regions},
        "mask": {0: regions, 1: keys},
    }
    program = torch.export.export(Routed(), inputs(4, 5, 3), dynamic_shapes=dynamic)
    assert "backbones.routed_attention.default" in _targets(program.graph)
    for nb, n, n_kv in ((4, 5, 3), (6, 9, 2)):
        q, kv, rows, mask = inputs(nb, n, n_kv)
        # the block's PyTorch path on the same inputs, the per-key-region mask in its (N, 1, 1, topk * n_kv) form
        ref = _routed_attention_chunks(q, kv, rows, mask[rows].view(nb, 1, 1, -1), None, 2, 8, 0.3)
        torch.testing.assert_close(program.module()(q, kv, rows, mask), ref, rtol=1e-4, atol=1e-5)


def test_register_ops_names_every_op():
    import backbones.kernels as kernels

    names = kernels.register_ops()
    assert len(names) == 7 and all(name.startswith("backbones::") for name in names)
    for name in names:  # each is a registered operator (an unknown name raises AttributeError)
        assert isinstance(getattr(torch.ops.backbones, name.split("::")[1]).default, torch._ops.OpOverload)
