"""BiFormer models: the official checkpoint layout (built here from the published key names and shapes) loads
strictly and computes what a naive forward pass written from the official architecture computes; released-weight
tags; the benchmark's official-formulation reference; bf16 autocast at detection size."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from biformer_naive import depthwise_same, naive_bra, naive_global_attention_lepe

import backbones
from backbones.models.biformer import checkpoint_filter_fn

# A reduced BiFormer-T layout: routing stages with topk 1/2/4 of 2 x 2 regions, 8-head global last stage.
DIMS, DEPTHS, TOPKS, REGIONS, HEAD_DIM, CLASSES = (16, 32, 48, 64), (1, 1, 2, 1), (1, 2, 4, None), 2, 8, 10
SMALL = dict(embed_dims=DIMS, depths=DEPTHS, topks=TOPKS, num_regions=REGIONS, head_dim=HEAD_DIM, num_classes=CLASSES)


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official rayleizhu/BiFormer key names and shapes (reference notes A.7)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.2, offset=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset

    sd = {}

    def bn(prefix, c):
        sd.update({
            f"{prefix}.weight": rnd(c, offset=1.0), f"{prefix}.bias": rnd(c),
            f"{prefix}.running_mean": rnd(c), f"{prefix}.running_var": rnd(c).abs() + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7),
        })  # fmt: skip

    c0 = DIMS[0]
    sd["downsample_layers.0.0.weight"], sd["downsample_layers.0.0.bias"] = rnd(c0 // 2, 3, 3, 3), rnd(c0 // 2)
    bn("downsample_layers.0.1", c0 // 2)  # index 2 is the GELU
    sd["downsample_layers.0.3.weight"], sd["downsample_layers.0.3.bias"] = rnd(c0, c0 // 2, 3, 3), rnd(c0)
    bn("downsample_layers.0.4", c0)
    for i in range(1, 4):
        sd[f"downsample_layers.{i}.0.weight"] = rnd(DIMS[i], DIMS[i - 1], 3, 3, scale=0.1)
        sd[f"downsample_layers.{i}.0.bias"] = rnd(DIMS[i])
        bn(f"downsample_layers.{i}.1", DIMS[i])
    for i, (c, depth, topk) in enumerate(zip(DIMS, DEPTHS, TOPKS)):
        for j in range(depth):
            p = f"stages.{i}.{j}."
            sd[p + "pos_embed.weight"], sd[p + "pos_embed.bias"] = rnd(c, 1, 3, 3), rnd(c)
            for n in ("norm1", "norm2"):
                sd[p + f"{n}.weight"], sd[p + f"{n}.bias"] = rnd(c, offset=1.0), rnd(c)
            sd[p + "attn.lepe.weight"], sd[p + "attn.lepe.bias"] = rnd(c, 1, 5, 5), rnd(c)
            if topk is not None:  # bi-level routing attention: fused qkv with bias, output projection "wo"
                sd[p + "attn.qkv.qkv.weight"], sd[p + "attn.qkv.qkv.bias"] = rnd(3 * c, c), rnd(3 * c)
                sd[p + "attn.wo.weight"], sd[p + "attn.wo.bias"] = rnd(c, c), rnd(c)
            else:  # global attention: qkv without bias, "proj"
                sd[p + "attn.qkv.weight"] = rnd(3 * c, c)
                sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = rnd(c, c), rnd(c)
            sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = rnd(3 * c, c), rnd(3 * c)
            sd[p + "mlp.3.weight"], sd[p + "mlp.3.bias"] = rnd(c, 3 * c), rnd(c)
    bn("norm", DIMS[-1])
    sd["head.weight"], sd["head.bias"] = rnd(CLASSES, DIMS[-1]), rnd(CLASSES)
    return sd


def naive_official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official classifier, written from its architecture description, on an official-layout state dict."""

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)  # fmt: skip

    def conv(t, p):
        return F.conv2d(t, sd[p + ".weight"], sd[p + ".bias"], stride=2, padding=1)

    x = bn(conv(F.gelu(bn(conv(x, "downsample_layers.0.0"), "downsample_layers.0.1")), "downsample_layers.0.3"),
           "downsample_layers.0.4")  # fmt: skip
    for i, (c, depth, topk) in enumerate(zip(DIMS, DEPTHS, TOPKS)):
        if i > 0:
            x = bn(conv(x, f"downsample_layers.{i}.0"), f"downsample_layers.{i}.1")
        for j in range(depth):
            p = f"stages.{i}.{j}."
            x = x + depthwise_same(x, sd[p + "pos_embed.weight"], sd[p + "pos_embed.bias"])
            t = x.permute(0, 2, 3, 1)
            y = F.layer_norm(t, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
            if topk is not None:  # auto-pad numerics of the official detection/segmentation backbones
                a = naive_bra(
                    y, sd[p + "attn.qkv.qkv.weight"], sd[p + "attn.qkv.qkv.bias"], sd[p + "attn.lepe.weight"],
                    sd[p + "attn.lepe.bias"], sd[p + "attn.wo.weight"], sd[p + "attn.wo.bias"],
                    num_heads=c // HEAD_DIM, num_regions=REGIONS, topk=topk, qk_dim=c, mask_padding=False,
                )  # fmt: skip
            else:
                a = naive_global_attention_lepe(
                    y, sd[p + "attn.qkv.weight"], sd[p + "attn.lepe.weight"], sd[p + "attn.lepe.bias"],
                    sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"], num_heads=8,
                )  # fmt: skip
            t = t + a
            y = F.layer_norm(t, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
            hidden = F.gelu(y @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"])
            t = t + hidden @ sd[p + "mlp.3.weight"].T + sd[p + "mlp.3.bias"]
            x = t.permute(0, 3, 1, 2)
    x = bn(x, "norm")
    return x.mean((2, 3)) @ sd["head.weight"].T + sd["head.bias"]


@pytest.fixture(scope="module")
def official():
    return official_state_dict()


@pytest.fixture(scope="module")
def loaded(official):
    model = timm.create_model("biformer_tiny", mask_padding=False, **SMALL).double().eval()
    # as released: the state dict under 'model' next to training state
    backbones.load_checkpoint(model, {"model": official, "epoch": 299, "optimizer": {}}, strict=True)
    return model


@pytest.mark.parametrize("hw", [(64, 64), (72, 88)])  # stage maps divisible by the regions, and padded
def test_official_layout_loads_strictly_and_matches_naive_official_forward(official, loaded, hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), naive_official_forward(official, x), rtol=1e-9, atol=1e-9)


def test_filter_passes_our_layout_through(loaded):
    ours = loaded.state_dict()
    filtered = checkpoint_filter_fn(ours, loaded)
    assert filtered.keys() == ours.keys()
    assert all(filtered[k] is ours[k] for k in ours)


def test_official_dense_wrapper_keys_and_missing_head(official):
    """The official detection/segmentation wrapper drops head and norm and adds extra_norms: the trunk still loads."""
    model = timm.create_model("biformer_tiny", **dict(SMALL, num_classes=0)).double()
    sd = {k: v for k, v in official.items() if not k.startswith("head.")}
    sd.update({f"extra_norms.{i}.weight": torch.ones(c) for i, c in enumerate(DIMS)})
    backbones.load_checkpoint(model, sd, strict=True)


def test_pretrained_tags_record_official_urls_and_custom_load(official, tmp_path):
    for name, share in [("tiny", "ChHEOoGkgwgQzEDlM"), ("small", "ChHDyM-x9KWRBZ832"), ("base", "ChHI_XPhoadjaNxtO")]:
        cfg = timm.models.get_pretrained_cfg(f"biformer_{name}.in1k")
        url, file_name = cfg.url
        assert url.startswith("https://api.onedrive.com/v1.0/shares/s!AkBbcz") and share in url
        assert file_name == f"biformer_{name}_in1k.pth"  # every URL ends in /root/content: distinct cache names
    # the released file as downloaded, loaded the way the tags do (custom_load: BiFormer.load_pretrained)
    path = tmp_path / "biformer_tiny_in1k.pth"
    torch.save({"model": {k: v.float() for k, v in official.items()}}, path)
    overlay = dict(file=str(path), custom_load=True)  # timm's overlay resets custom_load unless given
    model = timm.create_model("biformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **SMALL)
    torch.testing.assert_close(model.stages[2].blocks[1].mlp.fc2.weight, official["stages.2.1.mlp.3.weight"].float())
    torch.testing.assert_close(model.head.fc.bias, official["head.bias"].float())
    other = timm.create_model(
        "biformer_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **dict(SMALL, num_classes=5)
    )  # another classifier size: the trunk loads, the head keeps its initialisation
    torch.testing.assert_close(other.stem.conv1.weight, official["downsample_layers.0.0.weight"].float())
    assert other.head.fc.weight.shape == (5, DIMS[-1])


@pytest.mark.parametrize("hw", [(224, 224), (250, 330)])
def test_benchmark_reference_matches_ours(hw):
    """The official-formulation model tools/benchmark.py --compare times computes our numbers (fp32, 1e-5)."""
    from backbones.models._biformer_reference import OfficialStyleBiFormer

    torch.manual_seed(0)
    model = timm.create_model("biformer_tiny", mask_padding=False, embed_dims=DIMS, head_dim=HEAD_DIM).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(model(x), OfficialStyleBiFormer(model)(x), rtol=1e-4, atol=1e-5)


def test_mask_padding_only_matters_when_padded():
    torch.manual_seed(0)
    masked = timm.create_model("biformer_tiny", **SMALL).eval()
    official = timm.create_model("biformer_tiny", mask_padding=False, **SMALL).eval()
    official.load_state_dict(masked.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)  # stage maps 16/8/4: multiples of 2 regions
        torch.testing.assert_close(masked(x), official(x), rtol=0, atol=0)
        x = torch.randn(1, 3, 72, 88)
        assert (masked(x) - official(x)).abs().max() > 1e-4


def test_bf16_autocast_at_detection_size_is_finite():
    """800 x 1333 with the official COCO region count (16 per side), reduced width to keep the test cheap."""
    torch.manual_seed(0)
    model = timm.create_model(
        "biformer_small", embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), head_dim=8, num_regions=16
    ).eval()
    x = torch.randn(1, 3, 800, 1333)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(200, 334), (100, 167), (50, 84), (25, 42)]
    for f in feats:
        assert f.dtype == torch.bfloat16 and torch.isfinite(f).all()


def test_release_hyper_parameters():
    """Structure of the released models (reference notes A.2-A.6): heads, topk, regions, scales, MLP ratio."""
    with torch.device("meta"):
        model = timm.create_model("biformer_base")
    blocks = [stage.blocks for stage in model.stages]
    assert [len(b) for b in blocks] == [4, 4, 18, 4]
    for i, (c, heads, topk) in enumerate(zip((96, 192, 384), (3, 6, 12), (1, 4, 16))):
        attn = blocks[i][0].attn
        assert (attn.dim, attn.num_heads, attn.topk, attn.num_regions) == (c, heads, topk, 7)
        assert attn.scale == pytest.approx(c**-0.5)  # the full width, not the head width
        assert blocks[i][0].mlp.fc1.out_features == 3 * c
    last = blocks[3][0].attn
    assert last.num_heads == 8 and last.qkv.bias is None and last.lepe.kernel_size == (5, 5)
    assert isinstance(model.norm, torch.nn.BatchNorm2d) and model.stem.norm1.num_features == 48
