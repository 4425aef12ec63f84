"""Whole models with the Triton kernels against the same models on the PyTorch paths.

The kernel tests check each kernel and its block; here every dispatching block of a (reduced-width) BiFormer,
TransNeXt and HaloNet runs through its kernel at once, at an odd input size (padding, partial windows and masked
keys in every stage), and the logits and all parameter gradients must match the PyTorch paths. Without a GPU the
kernels run under Triton's interpreter (tests/conftest.py turns it on), with one on CUDA tensors.
"""

from __future__ import annotations

import pytest
import timm
import torch
from model_specs import small_kwargs

import backbones  # noqa: F401  (registers the models)
from backbones.kernels import interpreter_enabled, triton_available

if torch.cuda.is_available() and not interpreter_enabled():
    DEVICE = "cuda"
elif interpreter_enabled() and triton_available():
    DEVICE = "cpu"
else:
    DEVICE = None
pytestmark = pytest.mark.skipif(DEVICE is None, reason="needs CUDA or Triton's interpreter (TRITON_INTERPRET=1)")

# model -> (input size, mixers that must have run the kernel)
CASES = {
    "biformer_tiny": ((45, 39), "BiLevelRoutingAttention"),
    "transnext_micro": ((45, 39), "AggregatedAttention"),
    "halonet_h1": ((75, 61), "HaloAttention"),
}


def _run(model, x, backend, monkeypatch):
    monkeypatch.setenv("BACKBONES_KERNELS", backend)
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("name", list(CASES))
def test_model_with_kernels_matches_torch_paths(name, monkeypatch):
    size, mixer = CASES[name]
    torch.manual_seed(0)
    kwargs = dict(small_kwargs(name), num_classes=7)
    if name == "biformer_tiny":  # 3 x 3 regions (top-1, 4, 9 routed) keep the interpreter's program count small
        kwargs.update(depths=(1, 1, 1, 1), num_regions=3, topks=(1, 4, 9, None))
    # eval mode (BatchNorm running statistics, no stochastic depth), gradients all the same
    model = timm.create_model(name, **kwargs).to(DEVICE).eval()
    x = torch.randn(2, 3, *size, device=DEVICE)
    out_t, grads_t = _run(model, x, "torch", monkeypatch)
    mixers = [m for m in model.modules() if type(m).__name__ == mixer]
    assert mixers and all(m.last_kernel == "torch" for m in mixers)
    out_k, grads_k = _run(model, x, "triton", monkeypatch)
    assert all(m.last_kernel == "triton" for m in mixers), f"{name}: not every {mixer} ran the kernel"
    scale = out_t.abs().max()
    torch.testing.assert_close(out_k, out_t, atol=1e-5 * scale, rtol=1e-4)
    assert grads_k.keys() == grads_t.keys()
    # fp32 sums in another order through a whole network: 1e-4 of each gradient's scale; gradients that are zero
    # in exact arithmetic (e.g. a bias added to every logit of a softmax) are compared at the network's scale
    overall = max(g.abs().max() for g in grads_t.values())
    for n in grads_t:
        g_scale = torch.maximum(grads_t[n].abs().max(), 1e-3 * overall)
        torch.testing.assert_close(
            grads_k[n], grads_t[n], atol=1e-4 * g_scale, rtol=1e-3, msg=lambda m, n=n: f"{n}: {m}"
        )
