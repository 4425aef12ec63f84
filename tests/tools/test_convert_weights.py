"""tools/convert_weights.py: an official-layout release of every family (built as the parity tests build them)
-> the hub folder timm loads -> ``local-dir:`` / ``features_only`` / the mm adapter give what loading the official
file directly gives; the folder's config and model card; ``--all``; bad sources."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import timm
import torch
from tools_testlib import ROOT, load_tool

import backbones

sys.path.insert(0, str(ROOT / "tests" / "models"))  # the parity tests' official-layout builders


@pytest.fixture(scope="module")
def tool():
    return load_tool("convert_weights")


def _noisy(model: torch.nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.state_dict()


# family -> () -> (tag, reduced model kwargs, the release file's object, input size)
def _biformer():
    import test_biformer as t

    sd = {k: v.float() for k, v in t.official_state_dict().items()}
    return "biformer_tiny.in1k", dict(t.SMALL), {"model": sd, "epoch": 299}, (64, 64)


def _litv2():
    import test_litv2 as t

    sd = t.random_official_state_dict(t.official_shapes(**t.TINY, num_classes=10))
    return "litv2_small.in1k", dict(t.TINY, num_classes=10), {"model": sd, "epoch": 299}, (64, 64)


def _transnext():
    import test_transnext as t

    return "transnext_micro.in1k", dict(t.SMALL), t.official_state_dict(**t.SMALL), (64, 64)


def _davit():
    import test_davit as t

    ref = t.randomize_(t.timm_reference("davit_tiny", **t.SMALL))
    return "davit_tiny.msft_in1k", dict(t.SMALL), {"model": t.official_layout(ref.state_dict())}, (64, 64)


def _focalnet():
    import test_focalnet as t

    ref = t.randomize_(t.timm_reference("focalnet_tiny_srf", **t.SMALL))
    official = t.to_official(ref.state_dict(), post_norm=False)
    return "focalnet_tiny_srf.ms_in1k", dict(t.SMALL), {"model": official}, (64, 64)


def _efficientvit():
    import test_efficientvit_msra as t

    official = t._to_official(t._ours("efficientvit_m0").state_dict())
    return "efficientvit_m0.r224_in1k", {}, {"model": official}, (224, 224)  # fixed input size


def _halonet():
    from model_specs import small_kwargs

    kwargs = dict(small_kwargs("halonet26t"), num_classes=10)
    torch.manual_seed(0)
    sd = _noisy(timm.create_model("halonet26t", **kwargs))  # timm trained these: its layout is the release's
    return "halonet26t.a1h_in1k", kwargs, sd, (64, 64)


FAMILIES = {
    "biformer": _biformer, "litv2": _litv2, "transnext": _transnext, "davit": _davit, "focalnet": _focalnet,
    "efficientvit_msra": _efficientvit, "halonet": _halonet,
}


def _kwargs_args(kwargs: dict) -> list[str]:
    return ["--model-kwargs", *[f"{k}={json.dumps(v)}" for k, v in kwargs.items()]] if kwargs else []


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def converted(request, tool, tmp_path_factory):
    """(tag, kwargs, official file, converted folder, input size) of one family."""
    tag, kwargs, release, hw = FAMILIES[request.param]()
    if request.param != "halonet":  # timm trained HaloNet's weights: there, the release layout is ours
        ours = {k: v.shape for k, v in timm.create_model(tag.split(".")[0], **kwargs).state_dict().items()}
        theirs = {k: v.shape for k, v in backbones.models._common.unwrap_state_dict(release).items()}
        assert theirs.keys() != ours.keys() and sum(ours.get(k) != s for k, s in theirs.items()) >= 2  # another layout
    root = tmp_path_factory.mktemp(request.param)
    src = root / "official.pth"
    torch.save(release, src)
    out = root / tag
    assert tool.main([tag, "--src", str(src), "--out", str(out), *_kwargs_args(kwargs)]) == 0
    return tag, kwargs, src, out, hw


def test_folder_is_what_timm_reads(converted):
    tag, kwargs, src, out, _ = converted
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    arch, label = tag.split(".")
    assert cfg["architecture"] == arch and cfg["pretrained_cfg"]["tag"] == label
    assert cfg["pretrained_cfg"]["custom_load"] is False  # a plain state dict in our layout
    assert cfg["pretrained_cfg"]["license"] and cfg["pretrained_cfg"]["paper_ids"].startswith("arXiv:")
    published = timm.models.get_pretrained_cfg(tag)
    for key in ("input_size", "crop_pct", "mean", "std", "interpolation"):
        value = cfg["pretrained_cfg"][key]
        assert (tuple(value) if isinstance(value, list) else value) == getattr(published, key), key
    for key, value in kwargs.items():  # the reduced architecture is rebuilt from config.json
        assert cfg["model_args"][key] == (list(value) if isinstance(value, tuple) else value)
    card = (out / "README.md").read_text()
    assert f"# Model card for {tag}" in card and "arxiv.org/abs/" in card and str(src) in card
    assert "Params (M)" in card and "license:" in card


def test_local_dir_equals_the_official_file_loaded_directly(converted):
    tag, kwargs, src, out, hw = converted
    direct = timm.create_model(tag.split(".")[0], **kwargs).eval()
    backbones.load_checkpoint(direct, str(src))
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    fresh = timm.create_model(tag.split(".")[0], **kwargs).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        y = direct(x)
        torch.testing.assert_close(local(x), y, rtol=0, atol=0)
        assert (fresh(x) - y).abs().max() > 1e-3  # the weights really came from the file


def test_features_only_from_the_folder_equals_the_official_file(converted):
    tag, kwargs, src, out, hw = converted
    feats = timm.create_model(f"local-dir:{out}", pretrained=True, features_only=True).eval()
    # timm's own path for a local official file, through the family's filter
    direct = timm.create_model(tag, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(src)),
                               **kwargs).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        ours, ref = feats(x), direct(x)
    assert len(ours) == len(ref) >= 3
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mm_adapter_init_cfg_loads_the_folder(converted):
    pytest.importorskip("mmengine")
    from backbones.mm import TimmBackboneAdapter

    tag, kwargs, src, out, hw = converted
    arch = tag.split(".")[0]
    outs = {}
    for name, checkpoint in (("folder", f"local-dir:{out}"), ("safetensors", str(out / "model.safetensors")),
                             ("official", str(src))):
        adapter = TimmBackboneAdapter(arch, out_indices=(1, 2), model_kwargs=kwargs,
                                      init_cfg=dict(type="Pretrained", checkpoint=checkpoint))
        adapter.init_weights()
        with torch.no_grad():
            outs[name] = adapter.eval()(torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(0)))
    for name in ("folder", "safetensors"):
        for a, b in zip(outs[name], outs["official"]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_labels_of_an_imagenet_head_and_all_folder(tool, tmp_path):
    """``--all`` finds a release under its official file name; a 1000-class head gets ImageNet's label names."""
    import test_transnext as t

    src_dir = tmp_path / "releases"
    src_dir.mkdir()
    torch.save(t.official_state_dict(**t.SMALL), src_dir / "transnext_micro_224_1k.pth")  # the official name
    out = tmp_path / "out"
    # --all converts with the tags' own architectures: too big here, so the reduced one is checked via convert()
    folder = tool.convert("transnext_micro.in1k", str(src_dir / "transnext_micro_224_1k.pth"), out / "one",
                          model_kwargs=t.SMALL)
    cfg = json.loads((folder / "config.json").read_text())
    assert len(cfg["label_names"]) == 1000 and cfg["label_names"][0] == "n01440764"
    assert cfg["label_descriptions"]["n01440764"].startswith("tench")
    rows = tool.convert_all(str(src_dir), str(out / "all"), org=None)
    by_tag = {r["tag"]: r for r in rows}
    assert set(by_tag) == set(backbones.list_models(pretrained=True))
    assert by_tag["transnext_micro.in1k"]["source"].endswith("transnext_micro_224_1k.pth")
    assert by_tag["transnext_micro.in1k"]["status"].startswith("failed")  # a reduced file: the full model refuses
    assert "does not fit" in by_tag["transnext_micro.in1k"]["status"] or "mismatch" in by_tag[
        "transnext_micro.in1k"]["status"]
    assert by_tag["biformer_tiny.in1k"]["status"].startswith("no file")
    assert (out / "all" / "conversions.csv").is_file()


def test_bad_sources_are_clear_errors(tool, tmp_path):
    empty = tmp_path / "biformer_tiny_in1k.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty}.*incomplete.*empty"):
        tool.main(["biformer_tiny.in1k", "--src", str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="not a backbones model"):
        tool.main(["resnet50", "--src", str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no pretrained tag.*biformer_tiny.in1k"):
        tool.main(["biformer_tiny.in22k", "--src", str(empty), "--out", str(tmp_path / "o")])
    import test_transnext as t

    good = tmp_path / "t.pth"
    torch.save(t.official_state_dict(**t.SMALL), good)
    with pytest.raises(ValueError, match="does not fit TransNeXt"):  # strict: the reduced file into the full model
        tool.main(["transnext_micro.in1k", "--src", str(good), "--out", str(tmp_path / "o")])
    assert not os.path.exists(tmp_path / "o" / "model.safetensors")


def test_weights_table_covers_every_tag():
    table = load_tool("model_table")
    rows = table.weights_rows(sizes=False)
    assert [r["tag"] for r in rows] == backbones.list_models(pretrained=True)
    by_tag = {r["tag"]: r for r in rows}
    assert by_tag["biformer_tiny.in1k"]["hub"] == "none yet"  # no mirror exists: nothing pretends
    assert by_tag["focalnet_tiny_srf.ms_in1k"]["hub"] == "timm/focalnet_tiny_srf.ms_in1k"
    assert "github.com/microsoft/FocalNet/releases" in by_tag["focalnet_tiny_srf.ms_in1k"]["source"]
    assert {table._family_of(a) for a in backbones.list_models()} <= set(table.FAMILIES)  # every model card
    (tiny,) = table.weights_rows("transnext_tiny*")
    assert tiny["official_mb"].startswith("113") and tiny["converted_mb"] == "113"  # 28.26M fp32 parameters
    readme = Path(ROOT / "README.md").read_text()
    for r in rows:  # the README's Weights table is this tool's output
        assert f"| `{r['tag']}` | {r['source']} | {r['hub']} | {r['official_mb']} |" in readme
        assert f"`{r['command']}`" in readme


def test_push_uploads_the_folder_written(tool, tmp_path, monkeypatch):
    import huggingface_hub
    import test_biformer as t

    calls = []

    class FakeApi:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    src = tmp_path / "biformer_tiny_in1k.pth"
    torch.save({"model": {k: v.float() for k, v in t.official_state_dict().items()}}, src)
    out = tmp_path / "out"
    assert tool.main(["biformer_tiny.in1k", "--src", str(src), "--out", str(out), "--push", "org/biformer-tiny",
                      *_kwargs_args(t.SMALL)]) == 0
    assert calls[1:] == [("create_repo", "org/biformer-tiny", True),
                         ("upload_folder", "org/biformer-tiny", ["README.md", "config.json", "model.safetensors"])]
    card = (out / "README.md").read_text()
    assert 'timm.create_model("hf-hub:org/biformer-tiny", pretrained=True)' in card
    assert "**Official source:** https://api.onedrive.com/" in card


def test_offline_download_of_the_official_source_says_what_to_do(tool, tmp_path, monkeypatch):
    import urllib.error

    from timm.models import _hub

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(_hub, "download_url_to_file", offline)
    url = "https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth"
    with pytest.raises(SystemExit, match=f"could not download {url} .*URLError.*--src /path/to/litv2_s.pth"):
        tool.main(["litv2_small.in1k", "--out", str(tmp_path / "o")])  # no --src: the tag's official URL
