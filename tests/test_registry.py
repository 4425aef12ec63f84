"""Registration with timm: replacement allow-list, no warnings on import, clear errors for bad names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import backbones
from backbones import _registry


def test_import_prints_no_warnings():
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import backbones, timm; assert backbones.list_models()"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_every_model_is_created_by_timm_from_this_package():
    for name in backbones.list_models():
        fn = timm.models.model_entrypoint(name)
        assert fn.__module__.startswith("backbones.models."), (name, fn.__module__)


def test_replaced_names_are_allow_listed_and_timm_original_reachable():
    replaced = [n for n in backbones.list_models() if n in _registry._timm_originals]
    assert replaced, "expected some timm names to be replaced (FocalNet at least)"
    for name in replaced:
        assert backbones.is_replacement(name)
        assert backbones.timm_original(name).__module__.startswith("timm.models.")
        # same pretrained tags as timm's entry
    with pytest.raises(KeyError, match="does not replace"):
        backbones.timm_original("resnet50")


def test_pretrained_tags_kept_for_replaced_names():
    for name in backbones.list_models("focalnet*"):
        ours = timm.list_pretrained(f"{name}.*")
        assert ours, f"{name} lost its pretrained tags"
        for tag in ours:
            cfg = timm.models.get_pretrained_cfg(tag)
            assert cfg.hf_hub_id == f"timm/{tag}", (tag, cfg.hf_hub_id)


def test_collision_outside_allow_list_is_an_error():
    def resnet50(pretrained=False, **kwargs):  # noqa: ARG001 - a name timm already has
        raise AssertionError("never called")

    resnet50.__module__ = "backbones.models.fake"
    with pytest.raises(RuntimeError, match="collides with timm"):
        _registry.register_model(resnet50)
    assert timm.models.model_entrypoint("resnet50").__module__ == "timm.models.resnet"


def test_unknown_model_name_has_a_clear_error():
    with pytest.raises(ValueError, match="unknown model name 'focalnet_tiny_sfr'.*did you mean focalnet_tiny_srf"):
        backbones.create_model("focalnet_tiny_sfr")


def test_load_checkpoint_of_another_family_is_refused_clearly():
    model = backbones.create_model("focalnet_tiny_srf", embed_dim=16, depths=(1, 1, 1, 1))
    other = timm.create_model("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="another family or model size"):
        backbones.load_checkpoint(model, {"state_dict": other.state_dict()})


def test_load_checkpoint_of_another_size_names_the_shapes():
    model = backbones.create_model("focalnet_tiny_srf", embed_dim=16, depths=(1, 1, 1, 1))
    bigger = backbones.create_model("focalnet_tiny_srf", embed_dim=24, depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"shape mismatches.*stem\.proj\.weight: checkpoint \(24, 3, 4, 4\)"):
        backbones.load_checkpoint(model, {"model": bigger.state_dict()})


def test_load_checkpoint_unwraps_prefixes(tmp_path):
    model = backbones.create_model("focalnet_tiny_srf", embed_dim=16, depths=(1, 1, 1, 1)).eval()
    src = backbones.create_model("focalnet_tiny_srf", embed_dim=16, depths=(1, 1, 1, 1)).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    backbones.load_checkpoint(model, str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


@pytest.mark.parametrize("name", ["focalnet_tiny_srf"])
def test_bad_input_errors_name_the_expected_shape(name):
    model = backbones.create_model(name, embed_dim=16, depths=(1, 1, 1, 1)).eval()
    with pytest.raises(ValueError, match=r"3 channels.*\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 2, 2))
