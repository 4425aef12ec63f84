"""tools/*.py on an empty or cut-short checkpoint: an error naming the file and saying it is incomplete (today's
bare PytorchStreamReader / EOFError would not say which file), before any data or model is built."""

from __future__ import annotations

import pytest
import torch
from tools_testlib import ROOT, write_recipe


@pytest.fixture
def cut_file(tmp_path):
    whole = tmp_path / "whole.pth.tar"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}, "epoch": 0}, whole)
    cut = tmp_path / "last.pth.tar"
    cut.write_bytes(whole.read_bytes()[:-300])
    return cut


def test_validate_names_a_cut_checkpoint(tmp_path, validate_tool, cut_file):
    recipe = write_recipe(tmp_path / "r.yaml")
    with pytest.raises(SystemExit, match=f"tools/validate.py: checkpoint file {cut_file} is incomplete"):
        validate_tool.main([recipe, "--checkpoint", str(cut_file)])


def test_train_resume_names_a_cut_checkpoint(tmp_path, train_tool, cut_file):
    recipe = write_recipe(tmp_path / "r.yaml")
    with pytest.raises(ValueError, match=f"checkpoint file {cut_file} is incomplete"):
        train_tool.main([recipe, "--output", str(tmp_path / "out"), "--resume", str(cut_file)])


def test_mm_test_names_an_empty_checkpoint(tmp_path):
    pytest.importorskip("mmdet")
    from backbones.mm.runner import test_main

    empty = tmp_path / "epoch_12.pth"
    empty.write_bytes(b"")
    config = ROOT / "configs" / "det" / "mask-rcnn_focalnet-t-srf_fpn_1x_coco.py"
    with pytest.raises(ValueError, match=f"checkpoint file {empty} is incomplete: the file is empty"):
        test_main([str(config), str(empty)])
