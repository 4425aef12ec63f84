"""Agent-PVT: the official layouts (classifier and dense backbone) load strictly and compute what the official
formulations compute on random weights (the classifier at 224, the dense copy with its agent grids at 224 and at
256 x 320, and 224-trained weights at an odd size); released-weight tags; the benchmark reference.

The official layout comes from ``backbones.models._agent_reference.OfficialStyleAgentPVT``, a clean-room re-write of
LeapLabTHU/Agent-Attention ``agent_transformer/models/agent_pvt.py`` and its mmdet / mmseg copy (no licence, so the
files are not vendored). Its layout is pinned here independently: the key templates and shapes below are read off
the official classes, and its parameter counts at full size equal those of the official classes (built from a
snapshot of 207ce3e on the meta device).
"""

from __future__ import annotations

import re

import pytest
import timm
import torch

import backbones
from backbones.blocks import AgentAttention
from backbones.models._agent_reference import OfficialStyleAgentPVT, create_official_style
from backbones.models.agent_pvt import checkpoint_filter_fn

# A reduced Agent-PVT: heads of 8 channels, the released agent counts, one or two blocks per stage.
ARCH = dict(depths=(1, 2, 1, 1), embed_dims=(8, 16, 24, 32), num_heads=(1, 2, 3, 4), mlp_ratios=(2, 2, 1, 1))
OURS = dict(ARCH, num_classes=10)
DENSE_SHAPES = ((12, 12), (16, 16), (28, 28), (28, 28))  # the official detection / segmentation configs

# Official key templates (c: width, a: agents, g: the 224 grid side of the stage, m: MLP hidden) from agent_pvt.py.
OFFICIAL_BLOCK_KEYS = {
    "norm1.weight": lambda c, a, g, m: (c,), "attn.q.weight": lambda c, a, g, m: (c, c),
    "attn.kv.weight": lambda c, a, g, m: (2 * c, c), "attn.kv.bias": lambda c, a, g, m: (2 * c,),
    "attn.proj.weight": lambda c, a, g, m: (c, c), "attn.dwc.weight": lambda c, a, g, m: (c, 1, 3, 3),
    "attn.an_bias": lambda c, a, g, m: (c // 8, a, 7, 7), "attn.na_bias": lambda c, a, g, m: (c // 8, a, 7, 7),
    "attn.ah_bias": lambda c, a, g, m: (1, c // 8, a, g, 1), "attn.aw_bias": lambda c, a, g, m: (1, c // 8, a, 1, g),
    "attn.ha_bias": lambda c, a, g, m: (1, c // 8, g, 1, a), "attn.wa_bias": lambda c, a, g, m: (1, c // 8, 1, g, a),
    "norm2.weight": lambda c, a, g, m: (c,), "mlp.fc1.weight": lambda c, a, g, m: (m, c),
    "mlp.fc2.weight": lambda c, a, g, m: (c, m),
}  # fmt: skip
OFFICIAL_PARAMS = {"agent_pvt_tiny": 11_570_352, "agent_pvt_small": 20_635_066, "agent_pvt_medium": 35_921_746,
                   "agent_pvt_large": 48_738_180}  # fmt: skip


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if name.endswith("norm.weight") or re.search(r"norm\d\.weight$", name) else 0.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2 + offset)
    return model


@pytest.fixture(scope="module")
def official():
    return _randomise(OfficialStyleAgentPVT(**ARCH, num_classes=10).double()).eval()


@pytest.fixture(scope="module")
def loaded(official):
    model = timm.create_model("agent_pvt_tiny", **OURS).double().eval()
    # as released: the state dict under 'model' next to training state
    backbones.load_checkpoint(model, {"model": official.state_dict(), "epoch": 299, "optimizer": {}}, strict=True)
    return model


def test_official_layout_matches_the_official_key_templates(official):
    sd = official.state_dict()
    dims, grids, agents = ARCH["embed_dims"], (56, 28, 14, 7), (9, 16, 49, 49)
    expected = {"patch_embed1.proj.weight": (8, 3, 4, 4), "head.weight": (10, 32)}
    for i, (c, d, g, a, r) in enumerate(zip(dims, ARCH["depths"], grids, agents, ARCH["mlp_ratios"])):
        expected[f"pos_embed{i + 1}"] = (1, g * g, c)
        expected[f"patch_embed{i + 1}.norm.weight"] = (c,)
        if i:
            expected[f"patch_embed{i + 1}.proj.weight"] = (c, dims[i - 1], 2, 2)
        for j in range(d):
            for key, shape in OFFICIAL_BLOCK_KEYS.items():
                expected[f"block{i + 1}.{j}.{key}"] = shape(c, a, g, int(c * r))
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert all(re.match(r"^(patch_embed\d|pos_embed\d|block\d\.\d+|head)\b", k) for k in sd)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_reference_and_ours_have_the_official_parameter_counts(name):
    with torch.device("meta"):
        ref, ours = create_official_style(name), timm.create_model(name)
    assert sum(p.numel() for p in ref.parameters()) == OFFICIAL_PARAMS[name]
    assert sum(p.numel() for p in ours.parameters()) == OFFICIAL_PARAMS[name]


def test_official_classifier_layout_loads_strictly_and_matches_at_224(official, loaded):
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), official(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("hw", [(224, 224), (256, 320)])
def test_official_dense_backbone_loads_and_matches_with_its_agent_grids(official, hw):
    """mmdet / mmseg AgentPVT: the same keys under ``backbone.`` without the head; every bias resized."""
    dense = OfficialStyleAgentPVT(**ARCH, num_classes=0, agent_shapes=DENSE_SHAPES).double().eval()
    sd = {k: v for k, v in official.state_dict().items() if not k.startswith("head.")}
    dense.load_state_dict(sd, strict=True)
    model = timm.create_model("agent_pvt_tiny", **dict(OURS, num_classes=0, agent_shapes=DENSE_SHAPES)).double()
    backbones.load_checkpoint(model, {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}}, strict=True)
    x = torch.randn(1, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        ours = model.eval().forward_intermediates(x, intermediates_only=True)
        for a, b in zip(ours, dense.stage_outputs(x)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_odd_size_pads_and_multiples_of_32_match_the_official_formulation(official, loaded):
    """Official at 160 x 288 (no flooring: the same as our padding); ours also takes 113 x 97 (padded)."""
    with torch.no_grad():
        ref = OfficialStyleAgentPVT(**ARCH, num_classes=10, agent_shapes=((3, 3), (4, 4), (7, 7), (7, 7))).double()
        ref.load_state_dict(official.state_dict())
        x = torch.randn(1, 3, 160, 288, dtype=torch.float64)
        torch.testing.assert_close(loaded(x), ref.eval()(x), rtol=1e-9, atol=1e-9)
        feats = loaded.forward_intermediates(torch.randn(1, 3, 113, 97, dtype=torch.float64), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(29, 25), (15, 13), (8, 7), (4, 4)]


def test_filter_passes_our_layout_through(loaded):
    ours = loaded.state_dict()
    filtered = checkpoint_filter_fn(ours, loaded)
    assert filtered.keys() == ours.keys()
    assert all(filtered[k] is ours[k] for k in ours)


def test_pretrained_tags_and_the_256_tag_sizes_its_tables(official, tmp_path):
    urls = {"tiny": "13fdf0e0a7c5498c934f", "small": "36b8be9a8863456685a3", "medium": "4d00ecacf18b45f9b88c",
            "large": "040cfe0cfbbe4762ad09"}  # fmt: skip
    for v, key in urls.items():
        cfg = timm.models.get_pretrained_cfg(f"agent_pvt_{v}.in1k")
        assert tuple(cfg.url) == (f"https://cloud.tsinghua.edu.cn/f/{key}/?dl=1", f"agent_pvt_{v[0]}_max_acc.pth")
        assert cfg.input_size == (3, 224, 224)
    with torch.device("meta"):
        m256 = timm.create_model("agent_pvt_medium.in1k_256")
    assert m256.stages[0].pos_embed.shape == (1, 64 * 64, 64) and m256.stages[3].blocks[0].attn.ha_bias.shape[2] == 8
    path = tmp_path / "agent_pvt_t_max_acc.pth"
    torch.save({"model": {k: v.float() for k, v in official.state_dict().items()}}, path)
    model = timm.create_model("agent_pvt_tiny", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **OURS)  # fmt: skip
    torch.testing.assert_close(model.stages[1].blocks[1].attn.kv.weight, official.block2[1].attn.kv.weight.float())
    torch.testing.assert_close(model.head.fc.weight, official.head.weight.float())


def test_benchmark_reference_builds_and_computes_our_numbers():
    torch.manual_seed(0)
    ref = create_official_style("agent_pvt_tiny", embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4)).eval()
    model = timm.create_model("agent_pvt_tiny", embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4)).eval()
    backbones.load_checkpoint(model, ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert backbones._bench.get_reference("agent_pvt_small")[1] == "official-tokens"


def test_release_hyper_parameters():
    with torch.device("meta"):
        model = timm.create_model("agent_pvt_large")
    assert [len(s.blocks) for s in model.stages] == [3, 8, 27, 3]
    specs = zip(model.stages, (1, 2, 5, 8), (9, 16, 49, 49), (56, 28, 14, 7), (512, 1024, 1280, 2048))
    for stage, heads, agents, grid, hidden in specs:
        attn = stage.blocks[0].attn
        assert type(attn) is AgentAttention and attn.num_heads == heads and attn.agent_num == agents
        assert attn.train_grid == (grid, grid) and attn.sr_ratio == 1
        assert stage.blocks[0].mlp.fc1.out_features == hidden and stage.blocks[0].norm1.eps == 1e-6
    assert model.stages[0].downsample.norm.eps == 1e-5  # official PatchEmbed LayerNorm keeps the default eps
    assert not hasattr(model, "norm") and model.num_features == 512
