"""Where ``pretrained=True`` gets its file (cache, hub mirror, official URL: which served is logged) and the errors
when it cannot: offline / dead links name every location that failed and the three ways out; an empty, cut-short or
web-page checkpoint names its path wherever a checkpoint is read. No network: downloads are monkeypatched."""

from __future__ import annotations

import logging
import os
import urllib.error

import pytest
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from timm.models import _hub

import backbones
from backbones._weights import IncompleteCheckpointError, WeightsUnavailableError, check_checkpoint_file

SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=8)  # a reduced BiFormer-T
TRANSNEXT = dict(embed_dims=(24, 48, 72, 96), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty torch hub cache, no network for URLs and the hub."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_hub(repo, filename, **kwargs):
        calls.append(f"hub:{repo}/{filename}")
        raise LocalEntryNotFoundError("offline: cannot reach the Hugging Face Hub")

    monkeypatch.setattr(_hub, "download_url_to_file", no_network)
    monkeypatch.setattr(_hub, "hf_hub_download", no_hub)
    return tmp_path / "torch_hub" / "checkpoints", calls


def _release(path, name="biformer_tiny", **kwargs):
    model = timm.create_model(name, **kwargs)
    torch.save({"model": model.state_dict()}, path)
    return model


def test_offline_url_names_the_url_and_the_three_ways_out(cache):
    checkpoints, calls = cache
    with pytest.raises(WeightsUnavailableError) as e:
        timm.create_model("biformer_tiny.in1k", pretrained=True, **SMALL)
    text = str(e.value)
    url = timm.models.get_pretrained_cfg("biformer_tiny.in1k").url[0]
    assert calls == [url]
    assert f"official URL {url}: URLError" in text and "name resolution" in text
    assert "pretrained_cfg_overlay=dict(file='/path/to/biformer_tiny_in1k.pth', custom_load=True)" in text
    assert "tools/convert_weights.py biformer_tiny.in1k" in text and "local-dir:DIR" in text
    assert str(checkpoints / "biformer_tiny_in1k.pth") in text


def test_hub_only_tag_offline_says_so(cache):
    _, calls = cache
    with pytest.raises(WeightsUnavailableError, match="hub mirror timm/davit_tiny.msft_in1k: LocalEntryNotFound"):
        timm.create_model("davit_tiny.msft_in1k", pretrained=True)
    assert calls == ["hub:timm/davit_tiny.msft_in1k/model.safetensors"]


def test_hub_first_then_official_url_and_which_served_is_logged(cache, monkeypatch, caplog, tmp_path):
    checkpoints, calls = cache
    source = _release(tmp_path / "release.pth", "transnext_micro", **TRANSNEXT)

    def url_works(url, dst, *args, **kwargs):
        calls.append(url)
        torch.save(source.state_dict(), dst)

    monkeypatch.setattr(_hub, "download_url_to_file", url_works)
    with caplog.at_level(logging.INFO, logger="backbones.weights"):
        model = timm.create_model("transnext_micro.in1k", pretrained=True, **TRANSNEXT)
    cfg = timm.models.get_pretrained_cfg("transnext_micro.in1k")
    assert calls == [f"hub:{cfg.hf_hub_id}/{cfg.hf_hub_filename}", cfg.url]  # the mirror first, then the URL
    assert "hub mirror DaiShiResearch/transnext-micro-224-1k: LocalEntryNotFoundError" in caplog.text
    assert f"from the official URL {cfg.url}" in caplog.text
    torch.testing.assert_close(model.state_dict(), source.state_dict(), rtol=0, atol=0)
    # now it is cached: no network at all
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="backbones.weights"):
        timm.create_model("transnext_micro.in1k", pretrained=True, **TRANSNEXT)
    assert calls == [] and "from the cache of the official URL" in caplog.text


def test_hub_mirror_serves_when_reachable(cache, monkeypatch, caplog, tmp_path):
    from safetensors.torch import save_file

    _, calls = cache
    source = timm.create_model("focalnet_tiny_srf", embed_dim=16, depths=(1, 1, 2, 1))
    save_file(source.state_dict(), tmp_path / "model.safetensors")

    def hub(repo, filename, **kwargs):
        calls.append(f"hub:{repo}/{filename}")
        return str(tmp_path / "model.safetensors")

    monkeypatch.setattr(_hub, "hf_hub_download", hub)
    with caplog.at_level(logging.INFO, logger="backbones.weights"):
        model = timm.create_model("focalnet_tiny_srf.ms_in1k", pretrained=True, embed_dim=16, depths=(1, 1, 2, 1))
    assert calls == ["hub:timm/focalnet_tiny_srf.ms_in1k/model.safetensors"]
    assert "from the hub mirror timm/focalnet_tiny_srf.ms_in1k" in caplog.text
    torch.testing.assert_close(model.state_dict(), source.state_dict(), rtol=0, atol=0)


def test_every_tag_names_an_official_source_and_mirrors_are_real_or_empty():
    for name in backbones.list_models(pretrained=True):
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.url or cfg.hf_hub_id, name
        if cfg.hf_hub_id:  # timm's own copies (drop-in names), the authors' hub repositories, Florence-2
            # (aldjalkdf/RAVLT: the RAVLT authors' own hub repository, linked from the qhfan/RALA README;
            # Chat-UniVi/MoH-ViT-*: the MoH authors' repositories, linked from the SkyworkAI/MoH README)
            authors = ("timm/", "DaiShiResearch/", "microsoft/Florence-2", "aldjalkdf/RAVLT", "Chat-UniVi/MoH-ViT-")
            assert cfg.hf_hub_id.startswith(authors), name
    assert not timm.models.get_pretrained_cfg("biformer_tiny.in1k").hf_hub_id  # no mirror yet: nothing pretends


# ------------------------------------------------------------------------------------------ damaged files


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """(whole, cut short, empty, legacy pickle cut short, web page, safetensors cut short) files of a release."""
    from safetensors.torch import save_file

    tmp_path = tmp_path_factory.mktemp("damaged")
    whole = tmp_path / "whole.pth"
    model = _release(whole, "biformer_tiny", **SMALL)
    data = whole.read_bytes()
    files = {"whole": whole}
    for label, content in (("cut", data[: len(data) // 2]), ("empty", b""),
                           ("html", b"<!DOCTYPE html><html><body>Sign in to OneDrive</body></html>")):
        files[label] = tmp_path / f"{label}.pth"
        files[label].write_bytes(content)
    legacy = tmp_path / "legacy_whole.pth"
    torch.save({"model": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    files["legacy_cut"] = tmp_path / "legacy_cut.pth"
    files["legacy_cut"].write_bytes(legacy.read_bytes()[:-1000])
    save_file(model.state_dict(), tmp_path / "whole.safetensors")
    files["safetensors_cut"] = tmp_path / "cut.safetensors"
    files["safetensors_cut"].write_bytes((tmp_path / "whole.safetensors").read_bytes()[:-100])
    return files


_MESSAGES = {
    "cut": "incomplete: its zip archive has no central directory",
    "empty": "incomplete: the file is empty",
    "legacy_cut": "incomplete: reading it (stopped early|failed)",
    "html": "is a web page",
    "safetensors_cut": "incomplete: its tensors need",
}


@pytest.mark.parametrize("label", sorted(_MESSAGES))
def test_load_checkpoint_names_a_damaged_file(damaged, label):
    files = damaged
    model = timm.create_model("biformer_tiny", **SMALL)
    backbones.load_checkpoint(model, str(files["whole"]))
    with pytest.raises(IncompleteCheckpointError, match=f"{files[label]}.*{_MESSAGES[label]}"):
        backbones.load_checkpoint(model, str(files[label]))


def test_pretrained_file_local_dir_and_cache_name_a_damaged_file(tmp_path, cache, damaged):
    checkpoints, _ = cache
    files = damaged
    with pytest.raises(IncompleteCheckpointError, match=f"{files['cut']} is incomplete"):
        timm.create_model("biformer_tiny.in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(files["cut"])),
                          **SMALL)
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "config.json").write_text('{"architecture": "biformer_tiny", "pretrained_cfg": {}}')
    (folder / "model.safetensors").write_bytes(files["safetensors_cut"].read_bytes())
    with pytest.raises(IncompleteCheckpointError, match=f"{folder / 'model.safetensors'} is incomplete"):
        timm.create_model(f"local-dir:{folder}", pretrained=True, **SMALL)
    checkpoints.mkdir(parents=True)
    (checkpoints / "biformer_tiny_in1k.pth").write_bytes(files["cut"].read_bytes())  # an interrupted copy
    with pytest.raises(IncompleteCheckpointError, match=f"{checkpoints / 'biformer_tiny_in1k.pth'} is incomplete"):
        timm.create_model("biformer_tiny.in1k", pretrained=True, **SMALL)


def test_check_checkpoint_file_passes_whole_files_and_names_missing_ones(tmp_path, damaged):
    folder = damaged["whole"].parent
    for name in ("whole.pth", "legacy_whole.pth", "whole.safetensors"):
        check_checkpoint_file(folder / name)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope.pth'} does not exist"):
        check_checkpoint_file(tmp_path / "nope.pth")
    assert os.path.getsize(damaged["whole"]) > 0


def test_mm_adapter_init_cfg_names_a_damaged_file_and_a_failed_download(damaged, monkeypatch):
    pytest.importorskip("mmengine")
    from mmengine.runner.checkpoint import CheckpointLoader

    from backbones.mm import TimmBackboneAdapter

    files = damaged
    adapter = TimmBackboneAdapter("biformer_tiny", model_kwargs=SMALL,
                                  init_cfg=dict(type="Pretrained", checkpoint=str(files["empty"])))
    with pytest.raises(IncompleteCheckpointError, match=f"{files['empty']} is incomplete"):
        adapter.init_weights()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CheckpointLoader, "load_checkpoint", offline)
    url = "https://example.org/releases/biformer_tiny.pth"
    adapter = TimmBackboneAdapter("biformer_tiny", model_kwargs=SMALL, init_cfg=dict(type="Pretrained", checkpoint=url))
    with pytest.raises(WeightsUnavailableError, match=f"{url}.*could not be downloaded.*local-dir:"):
        adapter.init_weights()
