"""LayerDecayOptimWrapperConstructor: layer ids from the backbone's group_matcher, lr scales, weight decay."""

import pytest
import torch
from torch import nn

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("backbones.models.focalnet")

from backbones.mm import LayerDecayOptimWrapperConstructor, TimmBackboneAdapter  # noqa: E402

pytestmark = pytest.mark.mm

BASE_LR, WD, DECAY = 1e-3, 0.05, 0.5


class _Detector(nn.Module):
    """Stands in for an mmdet detector: `backbone.*` + a neck, plus a position table outside the backbone."""

    def __init__(self):
        super().__init__()
        self.backbone = TimmBackboneAdapter(
            "focalnet_tiny_srf", out_norms=True, model_kwargs=dict(embed_dim=16, depths=(1, 1, 2, 1))
        )
        self.neck = nn.Conv2d(128, 8, 1)
        self.query_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))


def _expected_layer_id(name: str) -> int:
    """Written out by hand for depths (1, 1, 2, 1): stem 0; each block one id; a stage's downsample shares the
    id of the stage's first block (timm's FocalNet group_matcher); everything outside the model is on top."""
    table = {
        "backbone.model.stem": 0,
        "backbone.model.layers.0.blocks.0": 1,
        "backbone.model.layers.1.downsample": 2, "backbone.model.layers.1.blocks.0": 2,
        "backbone.model.layers.2.downsample": 3, "backbone.model.layers.2.blocks.0": 3,
        "backbone.model.layers.2.blocks.1": 4,
        "backbone.model.layers.3.downsample": 5, "backbone.model.layers.3.blocks.0": 5,
    }
    for prefix, lid in table.items():
        if name.startswith(prefix + "."):
            return lid
    return 6


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_groups_lr_scales_and_weight_decay(scope):
    import importlib

    registry = importlib.import_module(f"{scope}.registry")
    model = _Detector()
    constructor = registry.OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type="LayerDecayOptimWrapperConstructor",
        optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD)),
        paramwise_cfg=dict(layer_decay_rate=DECAY),
    ))
    optimizer = constructor(model).optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    seen = {}
    for group in optimizer.param_groups:
        for name, p in zip(group["param_names"], group["params"]):
            seen[name] = p
            lid = _expected_layer_id(name)
            assert group["layer_id"] == lid, name
            assert group["lr"] == pytest.approx(BASE_LR * DECAY ** (6 - lid)), name
            no_decay = p.ndim <= 1 or name == "query_pos_embed"
            assert group["weight_decay"] == (0.0 if no_decay else WD), name
    assert set(seen) == {n for n, _ in model.named_parameters()}  # every parameter exactly once
    assert len(seen) == sum(len(g["params"]) for g in optimizer.param_groups)


def test_frozen_parameters_are_left_out():
    model = _Detector()
    model.backbone.model.stem.requires_grad_(False)
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type="SGD", lr=BASE_LR, weight_decay=WD)), dict(layer_decay_rate=DECAY))
    names = [n for g in constructor(model).optimizer.param_groups for n in g["param_names"]]
    assert not any(n.startswith("backbone.model.stem.") for n in names)


def test_no_decay_patterns_and_defaults():
    model = _Detector()
    constructor = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD)),
        dict(no_weight_decay_names=["*neck*"]))  # replaces the default patterns; layer_decay_rate defaults to 1
    groups = constructor(model).optimizer.param_groups
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert wd["neck.weight"] == 0.0 and wd["query_pos_embed"] == WD
    assert all(g["lr"] == pytest.approx(BASE_LR) for g in groups)


def test_errors():
    with pytest.raises(ValueError, match="unknown paramwise_cfg keys"):
        LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type="SGD", lr=0.1)), dict(decay_rate=0.9))
    with pytest.raises(ValueError, match="group_matcher"):
        LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type="SGD", lr=0.1)), dict())(nn.Linear(2, 2))


@pytest.mark.filterwarnings(r"ignore:Detected call of `scheduler.step\(\)`")
def test_lr_scales_survive_the_param_schedulers():
    """mmengine schedulers scale each group's own initial lr, so the layer-wise ratios hold during warm-up."""
    from mmengine.optim import LinearLR

    model = _Detector()
    wrapper = LayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD)), dict(layer_decay_rate=DECAY))(model)
    scheduler = LinearLR(wrapper, start_factor=0.1, by_epoch=False, begin=0, end=10)
    wrapper.optimizer.step()
    scheduler.step()
    groups = wrapper.optimizer.param_groups
    factor = groups[0]["lr"] / groups[0]["initial_lr"]
    assert 0.1 < factor < 1.0
    for g in groups:
        assert g["initial_lr"] == pytest.approx(BASE_LR * g["lr_scale"])
        assert g["lr"] == pytest.approx(factor * BASE_LR * g["lr_scale"])
