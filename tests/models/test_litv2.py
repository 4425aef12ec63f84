"""LITv2: the official ziplab/LITv2 checkpoint layout (built here from the published key/shape rules) loads
strictly through the filter, and the model with those weights computes what the official formulation computes
(re-written here on the official state dict: tokens (B, N, C), token merging closing each stage, HiLo with the
padded input, Hi-Fi channels before Lo-Fi); released-file loading, pretrained tags, any-size outputs, bad input."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

import backbones
from backbones.models.litv2 import checkpoint_filter_fn

# The released architectures (shared/reference/biformer_litv2.md B.5) and a reduced one for numerics.
ARCHS = {
    "litv2_small": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "litv2_medium": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "litv2_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}
TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
ALPHA, LOCAL_WS, HAS_MSA = 0.9, (0, 0, 2, 1), (0, 0, 1, 1)


def official_shapes(embed_dim, depths, num_heads, alpha=ALPHA, local_ws=LOCAL_WS, num_classes=1000, in_chans=3):
    """Key -> shape of the official classification LITv2 (ziplab/LITv2 classification/models/*.py)."""
    shapes = {
        "patch_embed.proj.weight": (embed_dim, in_chans, 4, 4),
        "patch_embed.proj.bias": (embed_dim,),
        "patch_embed.norm.weight": (embed_dim,),
        "patch_embed.norm.bias": (embed_dim,),
    }
    for i, depth in enumerate(depths):
        c = embed_dim * 2**i
        hd = c // num_heads[i]
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            if HAS_MSA[i]:
                shapes.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,)})
                l_heads = num_heads[i] if local_ws[i] == 1 else int(num_heads[i] * alpha)
                h_heads = num_heads[i] - l_heads
                l_dim, h_dim = l_heads * hd, h_heads * hd
                if l_heads:
                    shapes.update({
                        p + "attn.l_q.weight": (l_dim, c), p + "attn.l_q.bias": (l_dim,),
                        p + "attn.l_kv.weight": (2 * l_dim, c), p + "attn.l_kv.bias": (2 * l_dim,),
                        p + "attn.l_proj.weight": (l_dim, l_dim), p + "attn.l_proj.bias": (l_dim,),
                    })
                if h_heads:
                    shapes.update({
                        p + "attn.h_qkv.weight": (3 * h_dim, c), p + "attn.h_qkv.bias": (3 * h_dim,),
                        p + "attn.h_proj.weight": (h_dim, h_dim), p + "attn.h_proj.bias": (h_dim,),
                    })
            shapes.update({
                p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                p + "mlp.dwconv.dwconv.weight": (4 * c, 1, 3, 3), p + "mlp.dwconv.dwconv.bias": (4 * c,),
                p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,),
            })
        if i < len(depths) - 1:
            p = f"layers.{i}.downsample."
            shapes.update({
                p + "dconv.weight": (2 * c, c, 2, 2), p + "dconv.bias": (2 * c,),
                p + "dconv.conv_offset.weight": (8, c, 2, 2), p + "dconv.conv_offset.bias": (8,),
                p + "norm_layer.weight": (2 * c,), p + "norm_layer.bias": (2 * c,),
                p + "norm_layer.running_mean": (2 * c,), p + "norm_layer.running_var": (2 * c,),
                p + "norm_layer.num_batches_tracked": (),
            })
    c = embed_dim * 2 ** (len(depths) - 1)
    shapes.update({"norm.weight": (c,), "norm.bias": (c,)})
    shapes.update({"head.weight": (num_classes, c), "head.bias": (num_classes,)})
    return shapes


def random_official_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif "norm" in k and k.endswith("weight"):
            sd[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "conv_offset" in k:
            sd[k] = 0.3 * torch.randn(shape, generator=g)  # offsets of about a pixel: sampling off the grid
        else:
            sd[k] = 0.2 * torch.randn(shape, generator=g) / math.sqrt(shape[-1] if len(shape) == 2 else 1)
    return sd


# ------------------------------------------------------------------------------ the official formulation


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])


def _attend(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v


def official_hilo(x, H, W, sd, p, num_heads, ws, alpha):
    """Tokens (B, N, C): pad the map to ws with zeros, Hi-Fi windows + Lo-Fi pooled keys, crop, [hi | lo]."""
    B, N, C = x.shape
    hd = C // num_heads
    l_heads = num_heads if ws == 1 else int(num_heads * alpha)
    h_heads = num_heads - l_heads
    scale = hd**-0.5
    x = F.pad(x.reshape(B, H, W, C), (0, 0, 0, (-W) % ws, 0, (-H) % ws))
    Hp, Wp = x.shape[1:3]
    outs = []
    if h_heads:
        hg, wg = Hp // ws, Wp // ws
        win = x.reshape(B, hg, ws, wg, ws, C).transpose(2, 3)  # (B, hg, wg, ws, ws, C)
        qkv = _lin(win, sd, p + "h_qkv").reshape(B, hg * wg, ws * ws, 3, h_heads, hd).permute(3, 0, 1, 4, 2, 5)
        o = _attend(qkv[0], qkv[1], qkv[2], scale)  # (B, nW, heads, ws*ws, hd)
        o = o.transpose(2, 3).reshape(B, hg, wg, ws, ws, h_heads * hd).transpose(2, 3).reshape(B, Hp, Wp, -1)
        outs.append(_lin(o, sd, p + "h_proj")[:, :H, :W])
    if l_heads:
        q = _lin(x, sd, p + "l_q").reshape(B, Hp * Wp, l_heads, hd).transpose(1, 2)
        pooled = x if ws == 1 else F.avg_pool2d(x.permute(0, 3, 1, 2), ws, ws).permute(0, 2, 3, 1)
        kv = _lin(pooled.reshape(B, -1, C), sd, p + "l_kv").reshape(B, -1, 2, l_heads, hd).permute(2, 0, 3, 1, 4)
        o = _attend(q, kv[0], kv[1], scale).transpose(1, 2).reshape(B, Hp, Wp, -1)
        outs.append(_lin(o, sd, p + "l_proj")[:, :H, :W])
    return torch.cat(outs, dim=-1).reshape(B, N, C)


def official_dwmlp(x, H, W, sd, p):
    B, N, _ = x.shape
    x = _lin(x, sd, p + "fc1")
    x = x.transpose(1, 2).reshape(B, -1, H, W)
    w = sd[p + "dwconv.dwconv.weight"]
    x = F.conv2d(x, w, sd[p + "dwconv.dwconv.bias"], padding=1, groups=w.shape[0]).flatten(2).transpose(1, 2)
    return _lin(F.gelu(x), sd, p + "fc2")


def official_dtm(x, H, W, sd, p):
    B, N, C = x.shape
    x = x.transpose(1, 2).reshape(B, C, H, W)
    offset = F.conv2d(x, sd[p + "dconv.conv_offset.weight"], sd[p + "dconv.conv_offset.bias"], stride=2)
    x = deform_conv2d(x, offset, sd[p + "dconv.weight"], sd[p + "dconv.bias"], stride=2)
    x = F.batch_norm(x, sd[p + "norm_layer.running_mean"], sd[p + "norm_layer.running_var"],
                     sd[p + "norm_layer.weight"], sd[p + "norm_layer.bias"], training=False, eps=1e-5)
    H, W = x.shape[-2:]
    return F.gelu(x).flatten(2).transpose(1, 2), H, W


def official_forward(sd, x, embed_dim, depths, num_heads):
    """(logits, stage outputs as NCHW) of the official classification model with the detection backbone's
    padding (patch embedding to /4, HiLo to /ws; token merging floors odd sizes)."""
    x = F.pad(x, (0, (-x.shape[-1]) % 4, 0, (-x.shape[-2]) % 4))
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4)
    B, C, H, W = x.shape
    x = _ln(x.flatten(2).transpose(1, 2), sd, "patch_embed.norm")
    stages = []
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            if HAS_MSA[i]:
                x = x + official_hilo(_ln(x, sd, p + "norm1"), H, W, sd, p + "attn.", num_heads[i], LOCAL_WS[i], ALPHA)
            x = x + official_dwmlp(_ln(x, sd, p + "norm2"), H, W, sd, p + "mlp.")
        stages.append(x.transpose(1, 2).reshape(B, -1, H, W))
        if i < len(depths) - 1:
            x, H, W = official_dtm(x, H, W, sd, f"layers.{i}.downsample.")
    x = _ln(x, sd, "norm").mean(1)
    return _lin(x, sd, "head"), stages


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(ARCHS))
def test_official_layout_keys_and_shapes_map_onto_ours(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    official = {k: torch.empty(s, device="meta") for k, s in official_shapes(**ARCHS[name]).items()}
    mapped = checkpoint_filter_fn(official, model)
    ours = model.state_dict()
    assert sorted(mapped) == sorted(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)


def test_official_state_dict_loads_strictly_into_litv2_small():
    model = timm.create_model("litv2_small")
    sd = random_official_state_dict(official_shapes(**ARCHS["litv2_small"]))
    backbones.load_checkpoint(model, {"model": sd}, strict=True)  # Swin-style wrapper, as released
    ours = model.state_dict()
    torch.testing.assert_close(ours["stages.3.downsample.conv.conv_offset.weight"],
                               sd["layers.2.downsample.dconv.conv_offset.weight"])
    torch.testing.assert_close(ours["stages.2.blocks.5.attn.hifi_qkv.weight"],
                               sd["layers.2.blocks.5.attn.h_qkv.weight"])
    torch.testing.assert_close(ours["stages.0.blocks.1.norm.bias"], sd["layers.0.blocks.1.norm2.bias"])
    torch.testing.assert_close(ours["head.fc.weight"], sd["head.weight"])


@pytest.fixture(scope="module")
def tiny_pair():
    sd = random_official_state_dict(official_shapes(**TINY, num_classes=10))
    models = {}
    for mask in (True, False):
        torch.manual_seed(0)
        m = timm.create_model("litv2_small", num_classes=10, mask_padding=mask, **TINY).eval()
        backbones.load_checkpoint(m, sd, strict=True)
        models[mask] = m
    return sd, models


@pytest.mark.parametrize("mask_padding", [True, False])
def test_matches_official_formulation_at_divisible_size(tiny_pair, mask_padding):
    sd, models = tiny_pair
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref_logits, ref_stages = official_forward(sd, x, **TINY)
        final, stages = models[mask_padding].forward_intermediates(x)
        logits = models[mask_padding].forward_head(final)
    for a, b in zip(stages, ref_stages):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_official_padding_numerics_with_mask_padding_false(tiny_pair):
    """80 x 112: stage-2 map 5 x 7, so HiLo pads its 2 x 2 windows (token merging has not floored anything yet)."""
    sd, models = tiny_pair
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        _, ref_stages = official_forward(sd, x, **TINY)
        official = models[False].forward_intermediates(x, indices=[2], intermediates_only=True)[0]
        masked = models[True].forward_intermediates(x, indices=[2], intermediates_only=True)[0]
    assert official.shape[-2:] == (5, 7)
    torch.testing.assert_close(official, ref_stages[2], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(masked, ref_stages[2], atol=1e-3)  # masking changes the border tokens


def test_any_size_gives_ceil_maps_and_detection_checkpoint_norms_are_dropped(tiny_pair):
    sd, models = tiny_pair
    model = models[True]
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 250, 330), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(63, 83), (32, 42), (16, 21), (8, 11)]
    det = {k: v for k, v in sd.items() if not k.startswith(("head.", "norm."))}
    det.update({f"norm{i}.{p}": torch.ones(16 * 2**i) for i in (1, 2, 3) for p in ("weight", "bias")})
    headless = timm.create_model("litv2_small", num_classes=0, **TINY)
    mapped = checkpoint_filter_fn({"state_dict": {f"backbone.{k}": v for k, v in det.items()}}, headless)
    missing = set(headless.state_dict()) - set(mapped)
    assert missing == {"norm.weight", "norm.bias"} and set(mapped) <= set(headless.state_dict())


class NotImportable:  # pickled under a module name that will not exist when the file is read
    def __init__(self):
        self.lr = 1e-3


def test_load_pretrained_reads_a_swin_style_training_file(tmp_path, tiny_pair, monkeypatch):
    sd, models = tiny_pair
    NotImportable.__module__ = "yacs_that_is_not_installed.config"
    import sys
    import types

    fake = types.ModuleType("yacs_that_is_not_installed.config")
    fake.NotImportable = NotImportable
    monkeypatch.setitem(sys.modules, "yacs_that_is_not_installed", types.ModuleType("yacs_that_is_not_installed"))
    monkeypatch.setitem(sys.modules, "yacs_that_is_not_installed.config", fake)
    path = tmp_path / "litv2_tiny.pth"
    torch.save({"model": sd, "config": NotImportable(), "epoch": 299, "max_accuracy": 82.0}, path)
    monkeypatch.delitem(sys.modules, "yacs_that_is_not_installed.config")
    monkeypatch.delitem(sys.modules, "yacs_that_is_not_installed")

    model = timm.create_model("litv2_small", num_classes=7, **TINY).eval()  # another classifier size
    head = model.head.fc.weight.clone()
    model.load_pretrained(str(path))
    torch.testing.assert_close(model.head.fc.weight, head)  # kept its initialisation
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), models[True].forward_features(x))
    gray = timm.create_model("litv2_small", in_chans=1, num_classes=0, **TINY)
    gray.load_pretrained(str(path))  # stem adapted to one channel: the sum of the RGB kernels
    torch.testing.assert_close(gray.stem.proj.weight, sd["patch_embed.proj.weight"].sum(1, keepdim=True))


def test_pretrained_tags_record_the_official_release():
    tags = timm.list_pretrained("litv2_*")
    assert set(tags) == {"litv2_small.in1k", "litv2_medium.in1k", "litv2_base.in1k", "litv2_base.in1k_384"}
    for tag, file in [("litv2_small.in1k", "litv2_s.pth"), ("litv2_base.in1k_384", "litv2_b_384.pth")]:
        cfg = timm.models.get_pretrained_cfg(tag)
        assert cfg.url == f"https://github.com/ziplab/LITv2/releases/download/v1.0/{file}"
    assert timm.models.get_pretrained_cfg("litv2_base.in1k_384").input_size == (3, 384, 384)


def test_heads_from_head_dim_match_the_official_configs():
    for name, arch in ARCHS.items():
        with torch.device("meta"):
            model = timm.create_model(name)
        heads = [s.blocks[0].attn.num_heads for s in model.stages if hasattr(s.blocks[0], "attn")]
        assert heads == list(arch["num_heads"][2:])
        assert [type(s.blocks[0]).__name__ for s in model.stages] == ["ConvFFNBlock"] * 2 + ["HiLoBlock"] * 2


def test_bad_input_errors_name_the_expected_shape():
    model = timm.create_model("litv2_small", **TINY).eval()
    with pytest.raises(ValueError, match=r"3 channels.*\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="window_sizes"):
        timm.create_model("litv2_small", window_sizes=(0, 0, 0, 1))
