"""Named hybrids plug into the mm adapter unchanged: out_indices, odd sizes, frozen stages, checkpointing."""

import math

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from backbones.mm import TimmBackboneAdapter  # noqa: E402

pytestmark = pytest.mark.mm

SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=8)


@pytest.mark.parametrize("name", ["hybrid_tiny_focal_routed", "hybrid_tiny_halo_global"])
def test_hybrid_as_dense_backbone(name):
    m = TimmBackboneAdapter(name, out_indices=(1, 2, 3), out_norms=True, model_kwargs=SMALL).eval()
    assert m.channels == [32, 48, 64] and m.strides == [8, 16, 32]
    h, w = 97, 75
    with torch.no_grad():
        feats = m(torch.randn(1, 3, h, w))
    for f, c, s in zip(feats, m.channels, m.strides):
        assert f.shape == (1, c, math.ceil(h / s), math.ceil(w / s)) and torch.isfinite(f).all()


def test_hybrid_frozen_stages_and_with_cp():
    torch.manual_seed(0)
    plain = TimmBackboneAdapter("hybrid_tiny_static_global", frozen_stages=1, model_kwargs=SMALL)
    cp = TimmBackboneAdapter("hybrid_tiny_static_global", frozen_stages=1, with_cp=True, model_kwargs=SMALL)
    cp.load_state_dict(plain.state_dict())
    frozen = ("model.stem.", "model.stages.0.")
    for name, p in plain.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    x = torch.randn(2, 3, 64, 64)
    for m in (plain, cp):
        m.train()
        sum((f**2).mean() for f in m(x)).backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), cp.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=n)
