"""Recipe loading (backbones.engine), the digits dataset and the training sampler's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tools_testlib import ROOT

from backbones.data import DigitsDataset, create_dataset, list_datasets
from backbones.engine import DEFAULTS, ConfigError, build_model, load_config
from backbones.train_utils import set_sampler_epoch


def test_demo_recipe_loads_and_builds():
    cfg = load_config(str(ROOT / "configs/cls/digits_focalnet_nano.yaml"))
    assert cfg.model == "focalnet_tiny_srf" and cfg.dataset == "digits"
    assert set(cfg) == set(DEFAULTS)
    import backbones

    if not backbones.list_models("focalnet_tiny_srf"):
        pytest.skip("FocalNet is not registered yet")
    model = build_model(cfg, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) < 2e6


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs/cls").glob("*.yaml")), ids=str
)
def test_every_recipe_loads(path):
    import timm

    import backbones  # noqa: F401

    cfg = load_config(str(ROOT / path))
    if not timm.is_model(cfg.model):
        pytest.skip(f"{cfg.model} is not registered yet")


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model: resnet18\nmodel_kwargs: {drop_rate: 0.1, act_layer: relu}\nlr: 0.5\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel_kwargs: {drop_rate: 0.2}\nepochs: 3\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["lr=1e-3", "model_kwargs.depths=[1, 1]", "amp=true"])
    assert cfg.model == "resnet18" and cfg.epochs == 3
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.model_kwargs == {"drop_rate": 0.2, "act_layer": "relu", "depths": [1, 1]}
    assert cfg.amp is True
    (tmp_path / "replace.yaml").write_text("_base_: base.yaml\nmodel_kwargs: {_delete_: true, drop_rate: 0.3}\n")
    assert load_config(str(tmp_path / "replace.yaml")).model_kwargs == {"drop_rate": 0.3}


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: resnet18\nwarmup_epoch: 3\n", r"unknown recipe key 'warmup_epoch'.*did you mean warmup_epochs"),
        ("model: resnet18\nepochs: three\n", r"'epochs' must be a number"),
        ("model: resnet18\nepochs: 2.5\n", r"'epochs' must be an integer"),
        ("model: resnet18\namp: 1\n", r"'amp' must be true or false"),
        ("model: resnet18\nmodel_kwargs: [1, 2]\n", r"'model_kwargs' must be a mapping"),
        ("lr: 0.1\n", r"names no model"),
        ("- a\n- b\n", r"YAML mapping"),
        ("_base_: missing.yaml\nmodel: resnet18\n", r"recipe file not found"),
    ],
)
def test_bad_recipes(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_bad_overrides(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model: resnet18\n")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(str(path), ["lr"])
    with pytest.raises(ConfigError, match="unknown recipe key 'lrr'"):
        load_config(str(path), ["lrr=0.1"])


def test_digits_split_is_fixed_and_stratified():
    assert "digits" in list_datasets()
    train, val = create_dataset("digits", split="train"), create_dataset("digits", split="val")
    assert len(train) == 1437 and len(val) == 360
    assert np.bincount(val.targets).min() >= 35  # every class held out in proportion
    again = DigitsDataset(split="test")  # 'test' names the same held-out part
    np.testing.assert_array_equal(again.images, val.images)
    img, label = train[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 10
    small = DigitsDataset(split="val", image_size=8)
    assert small.images.shape == (360, 8, 8) and small.images.max() == 255
    with pytest.raises(ValueError, match="unknown split"):
        DigitsDataset(split="holdout")


def test_image_folder_needs_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        create_dataset("", root=str(tmp_path / "nowhere"), split="train")


def test_single_process_order_is_the_union_of_the_ranks(train_tool):
    """Batch k of 1 process x 16 == rank 0's and rank 1's batches k of 8, interleaved (epoch-seeded sampler)."""
    dataset = list(range(101))
    single = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True)
    ranks = [
        torch.utils.data.DataLoader(
            dataset, batch_size=8, drop_last=True,
            sampler=torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True),
        )
        for r in range(2)
    ]
    for epoch in (0, 3):
        for loader in [single, *ranks]:
            set_sampler_epoch(loader, epoch, seed=7)
        single_batches = [b.tolist() for b in single]
        rank_batches = [[b.tolist() for b in loader] for loader in ranks]
        assert len(single_batches) == len(rank_batches[0]) == 6
        for k, batch in enumerate(single_batches):
            assert batch[0::2] == rank_batches[0][k] and batch[1::2] == rank_batches[1][k]
    assert single_batches != [list(range(16 * k, 16 * k + 16)) for k in range(6)]
