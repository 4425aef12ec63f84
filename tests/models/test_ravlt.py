"""RAVLT models: the official checkpoint layout loads strictly and computes what the official formulation computes
(on random weights, at 224 and at an odd size, 113 x 97); the dense wrapper's keys; released-weight tags; the benchmark
reference; the released hyper-parameters; other registry mixers in RAVLT's stages.

The official layout comes from ``backbones.models._ravlt_reference.OfficialStyleRAVLT``, a clean-room re-write of
qhfan/RALA ``classfication/RALA.py`` (no licence, so the file itself is not vendored). Its layout is pinned here
against the official code independently: the key templates and shapes below are read off the official classes, and
its parameter counts at full size must equal those of the official classes (built from a snapshot of a86314f).
"""

from __future__ import annotations

import re

import pytest
import timm
import torch

import backbones
from backbones.blocks import RankAugmentedLinearAttention, RoPEGatedAttention
from backbones.models._ravlt_reference import OfficialStyleRAVLT, create_official_style
from backbones.models.ravlt import checkpoint_filter_fn

# A reduced RAVLT: heads of 16 channels; linear stages 1-2, softmax stages 3-4; layer scales as RAVLT-B.
ARCH = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 2, 1), num_heads=(1, 2, 3, 4),
            layer_init_values=(1.0, 1.0, 1e-6, 1e-6))  # fmt: skip
OURS = dict(embed_dims=ARCH["embed_dims"], depths=ARCH["depths"], num_heads=ARCH["num_heads"],
            layer_scale_init_values=ARCH["layer_init_values"], num_classes=10)  # fmt: skip

# Official key templates (c: stage width, h = int(3.5 c), s: stem width / 2) read off qhfan/RALA RALA.py.
OFFICIAL_BLOCK_KEYS = {
    "gamma_1": lambda c, h: (1, c, 1, 1), "gamma_2": lambda c, h: (1, c, 1, 1),
    "norm1.norm.weight": lambda c, h: (c,), "norm1.norm.bias": lambda c, h: (c,),
    "attn.qkvo.weight": lambda c, h: (4 * c, c, 1, 1), "attn.qkvo.bias": lambda c, h: (4 * c,),
    "attn.lepe.weight": lambda c, h: (c, 1, 5, 5), "attn.lepe.bias": lambda c, h: (c,),
    "attn.proj.weight": lambda c, h: (c, c, 1, 1), "attn.proj.bias": lambda c, h: (c,),
    "norm2.norm.weight": lambda c, h: (c,), "norm2.norm.bias": lambda c, h: (c,),
    "ffn.fc1.weight": lambda c, h: (h, c, 1, 1), "ffn.fc1.bias": lambda c, h: (h,),
    "ffn.fc2.weight": lambda c, h: (c, h, 1, 1), "ffn.fc2.bias": lambda c, h: (c,),
    "ffn.dwconv.weight": lambda c, h: (h, 1, 3, 3), "ffn.dwconv.bias": lambda c, h: (h,),
    "pos.weight": lambda c, h: (c, 1, 3, 3), "pos.bias": lambda c, h: (c,),
}  # fmt: skip
OFFICIAL_PARAMS = {"ravlt_t": 14_897_768, "ravlt_s": 25_591_208, "ravlt_b": 48_241_288, "ravlt_l": 95_242_440}


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if name.endswith("norm.weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2 + offset)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    return _randomise(OfficialStyleRAVLT(**ARCH, num_classes=10).double()).eval()


@pytest.fixture(scope="module")
def loaded(official):
    model = timm.create_model("ravlt_t", **OURS).double().eval()
    # as released: the state dict under 'model' next to training state
    backbones.load_checkpoint(model, {"model": official.state_dict(), "epoch": 299, "optimizer": {}}, strict=True)
    return model


def test_official_layout_matches_the_official_key_templates(official):
    sd = official.state_dict()
    dims, depths = ARCH["embed_dims"], ARCH["depths"]
    expected = {}
    s = dims[0] // 2
    for i, (cin, cout) in enumerate([(3, s), (s, s), (s, s), (s, dims[0])]):
        expected[f"patch_embed.proj.{3 * i}.weight"] = (cout, cin, 3, 3)
    for i, (c, d, heads) in enumerate(zip(dims, depths, ARCH["num_heads"])):
        expected[f"layers.{i}.RoPE.angle"] = (c // heads // 2,)
        for j in range(d):
            for key, shape in OFFICIAL_BLOCK_KEYS.items():
                expected[f"layers.{i}.blocks.{j}.{key}"] = shape(c, int(3.5 * c))
        if i < 3:
            expected[f"layers.{i}.downsample.reduction.weight"] = (dims[i + 1], c, 3, 3)
    expected.update({"proj.weight": (1024, dims[-1], 1, 1), "norm.weight": (1024,), "head.weight": (10, 1024, 1, 1)})
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    pattern = re.compile(r"^(patch_embed\.proj\.\d+|layers\.\d+\.(RoPE|blocks\.\d+|downsample)|proj|norm|head)\b")
    assert all(pattern.match(k) for k in sd)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_reference_and_ours_have_the_official_parameter_counts(name):
    with torch.device("meta"):
        ref, ours = create_official_style(name), timm.create_model(name)
    assert sum(p.numel() for p in ref.parameters()) == OFFICIAL_PARAMS[name]
    assert sum(p.numel() for p in ours.parameters()) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("hw", [(224, 224), (113, 97)])
def test_official_layout_loads_strictly_and_matches_the_official_forward(official, loaded, hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), official(x), rtol=1e-9, atol=1e-9)


def test_filter_passes_our_layout_through(loaded):
    ours = loaded.state_dict()
    filtered = checkpoint_filter_fn(ours, loaded)
    assert filtered.keys() == ours.keys()
    assert all(filtered[k] is ours[k] for k in ours)


def test_official_dense_wrapper_keys_and_missing_head(official, loaded):
    """The official detection / segmentation backbone (GLTA) has no head, proj or norm but adds extra_norms."""
    model = timm.create_model("ravlt_t", **dict(OURS, num_classes=0)).double().eval()
    sd = {f"backbone.{k}": v for k, v in official.state_dict().items() if not k.startswith("head.")}
    sd.update({f"backbone.extra_norms.{i}.norm.weight": torch.ones(c) for i, c in enumerate(ARCH["embed_dims"])})
    backbones.load_checkpoint(model, {"state_dict": sd, "meta": {}}, strict=True)
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        a = model.forward_intermediates(x, intermediates_only=True)
        b = loaded.forward_intermediates(x, intermediates_only=True)
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb, rtol=0, atol=0)


def test_pretrained_tags_point_at_the_hub_and_load(official, tmp_path):
    for v in "tsbl":
        cfg = timm.models.get_pretrained_cfg(f"ravlt_{v}.in1k")
        assert cfg.hf_hub_id == "aldjalkdf/RAVLT" and cfg.hf_hub_filename == f"RAVLT_{v.upper()}.pth"
        assert cfg.url == f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_{v.upper()}.pth"
        assert cfg.crop_pct == 0.875 and cfg.interpolation == "bicubic"
    path = tmp_path / "RAVLT_T.pth"
    sd = {k: v.float() for k, v in official.state_dict().items()}
    torch.save({"model": sd}, path)
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model("ravlt_t", pretrained=True, pretrained_cfg_overlay=overlay, **OURS)
    qkvo = sd["layers.1.blocks.1.attn.qkvo.weight"][..., 0, 0]
    torch.testing.assert_close(model.stages[1].blocks[1].attn.qkvo.weight, qkvo)
    torch.testing.assert_close(model.stages[3].downsample.conv.weight, sd["layers.2.downsample.reduction.weight"])
    torch.testing.assert_close(model.head.fc.weight, sd["head.weight"].flatten(1))


def test_benchmark_reference_builds_and_computes_our_numbers():
    """tools/benchmark.py --compare times create_official_style(name): with the same weights it is ours (fp32)."""
    torch.manual_seed(0)
    ref = create_official_style("ravlt_t", embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4)).eval()
    model = timm.create_model("ravlt_t", embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4)).eval()
    backbones.load_checkpoint(model, ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 160, 120)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert backbones._bench.get_reference("ravlt_s")[1] == "official-nchw"


def test_release_hyper_parameters():
    with torch.device("meta"):
        model = timm.create_model("ravlt_b")
    blocks = [stage.blocks for stage in model.stages]
    assert [len(b) for b in blocks] == [4, 6, 12, 6]
    classes = (RankAugmentedLinearAttention,) * 2 + (RoPEGatedAttention,) * 2
    for i, (cls, c, d) in enumerate(zip(classes, (96, 192, 384, 512), (96, 96, 64, 64))):
        attn = blocks[i][0].attn
        assert type(attn) is cls and attn.head_dim == d and attn.dim == c
        assert blocks[i][0].mlp.fc1.out_features == int(3.5 * c)
    assert [b[0].ls1.init_values for b in blocks] == [1.0, 1.0, 1e-6, 1e-6]
    assert model.num_features == 1024 and model.feature_info[-1]["num_chs"] == 512


def test_any_registry_mixer_in_the_stages():
    torch.manual_seed(0)
    model = timm.create_model("ravlt_t", **dict(OURS, mixers=("rala", ["rala", "dwconv"], "global", "rala"))).eval()
    assert isinstance(model.stages[1].blocks[1].attn, backbones.blocks.DWConvMixer)
    assert isinstance(model.stages[2].blocks[0].attn, backbones.blocks.GlobalAttention)
    assert model(torch.randn(1, 3, 70, 90)).shape == (1, 10)
    with pytest.raises(ValueError, match="mixers needs one value per stage"):
        timm.create_model("ravlt_t", **dict(OURS, mixers=("rala", "rala")))
    with pytest.raises(ValueError, match="expected input x with 3 channels"):
        model(torch.randn(1, 4, 64, 64))


def test_export_with_dynamic_size():
    """torch.export with symbolic H and W: the RoPE tables are built from the traced sizes, one graph for all."""
    torch.manual_seed(0)
    model = timm.create_model("ravlt_t", **dict(OURS, head_hidden_size=32)).eval()
    h, w = torch.export.Dim("h", min=40, max=512), torch.export.Dim("w", min=40, max=512)  # 1x1 last maps specialise
    program = torch.export.export(model, (torch.randn(1, 3, 64, 96),), dynamic_shapes=({2: h, 3: w},))
    x = torch.randn(1, 3, 75, 53)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-5)
