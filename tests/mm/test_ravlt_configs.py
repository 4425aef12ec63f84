"""RAVLT det/seg configs carry the official qhfan/RALA recipes (README numbers; detection configs of its mmdet 2.x
code, segmentation configs of its mmseg 0.x code) and start from the released ImageNet weights on the hub."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZES = {  # size -> (model, stage widths, drop path of the official dense configs)
    "t": ("ravlt_t", [64, 128, 256, 512], 0.1),
    "s": ("ravlt_s", [64, 128, 320, 512], 0.15),
    "b": ("ravlt_b", [96, 192, 384, 512], 0.4),
    "l": ("ravlt_l", [96, 192, 448, 640], 0.55),
}
PUBLISHED = {  # qhfan/RALA README
    ("mask-rcnn", "t"): "47.3 box AP / 42.7 mask AP", ("mask-rcnn", "s"): "49.8 box AP / 44.6 mask AP",
    ("mask-rcnn", "b"): "51.2 box AP / 45.7 mask AP", ("mask-rcnn", "l"): "52.3 box AP / 46.4 mask AP",
    ("retinanet", "t"): "45.9 box AP", ("retinanet", "s"): "48.3 box AP",
    ("retinanet", "b"): "49.8 box AP", ("retinanet", "l"): "50.9 box AP",
    ("fpn", "t"): "47.9 mIoU", ("fpn", "s"): "49.5 mIoU", ("fpn", "b"): "51.9 mIoU", ("fpn", "l"): "52.6 mIoU",
    ("mask-rcnn-3x", "s"): "51.4 box AP / 45.5 mask AP", ("mask-rcnn-3x", "b"): "52.7 box AP / 46.4 mask AP",
    ("mask-rcnn-3x", "l"): "53.6 box AP / 47.3 mask AP",
}  # fmt: skip


def _path(task, size):
    if task == "fpn":
        return CONFIGS / "seg" / f"fpn_ravlt-{size}_8xb2-80k_ade20k-512x512.py"
    if task == "mask-rcnn-3x":
        return CONFIGS / "det" / f"mask-rcnn_ravlt-{size}_fpn_ms-crop-3x_coco.py"
    return CONFIGS / "det" / f"{task}_ravlt-{size}_fpn_1x_coco.py"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def test_every_ravlt_config_is_checked():
    found = {p.name for task in ("det", "seg") for p in (CONFIGS / task).glob("*ravlt*.py")}
    assert found == {_path(*k).name for k in PUBLISHED}


@pytest.mark.parametrize("key", list(PUBLISHED), ids=lambda k: _path(*k).name)
def test_recipe(key):
    task, size = key
    path = _path(*key)
    cfg = _load(path)
    assert PUBLISHED[key] in path.read_text()
    model, channels, drop_path = SIZES[size]
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == model and bb.drop_path_rate == drop_path
    assert bb.out_norms == dict(type="LN", eps=1e-6)  # official extra_norms (LayerNorm2d, eps 1e-6)
    assert bb.norm_eval is True and bb.get("frozen_stages", -1) == -1  # official GLTA default norm_eval=True
    hub = f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_{size.upper()}.pth"
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=hub)
    opt = cfg.optim_wrapper.optimizer
    neck = cfg.model.neck
    if task == "fpn":
        assert tuple(bb.out_indices) == (0, 1, 2, 3) and neck.in_channels == channels
        assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 1e-4, 1e-4)
        (poly,) = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 0.9, 1e-6, 80000)
        assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 2
        assert cfg.model.data_preprocessor.size == (512, 512) and cfg.model.decode_head.num_classes == 150
        return
    wd = 1e-4 if task == "retinanet" else 0.05
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 1e-4, (0.9, 0.999), wd)
    if task == "retinanet":  # official FPN(start_level=1) over 4 stages == ours over stages 1..3
        assert tuple(bb.out_indices) == (1, 2, 3) and neck.in_channels == channels[1:] and neck.start_level == 0
        assert (neck.add_extra_convs, neck.num_outs) == ("on_input", 5)
        assert not cfg.optim_wrapper.paramwise_cfg  # decay on every parameter
    else:
        assert tuple(bb.out_indices) == (0, 1, 2, 3) and neck.in_channels == channels
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert keys["norm"] == dict(decay_mult=0.0) and keys["stem.norm"] == dict(decay_mult=1.0)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert cfg.train_dataloader.batch_size == 2
    if task == "mask-rcnn-3x":  # Swin multi-scale + crop augmentation, 36 epochs
        assert (steps.type, steps.milestones) == ("MultiStepLR", [27, 33]) and cfg.train_cfg.max_epochs == 36
        assert any(t.type == "RandomChoice" for t in cfg.train_dataloader.dataset.pipeline)
        return
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11]) and cfg.train_cfg.max_epochs == 12
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official


def test_mask_rcnn_weight_decay_groups():
    """No decay where the official parameter names hold 'norm' (block LayerNorms, downsample BatchNorms, extra_norms);
    decay on the stem BatchNorms (official patch_embed.proj.1/4/7/10) and on the rest."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from backbones.mm.runner import cpu_adapt

    cfg = _load(_path("mask-rcnn", "s"))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.model_kwargs = dict(depths=(1, 1, 1, 1))
    cpu_adapt(cfg)
    init_default_scope("mmdet")
    from mmdet.registry import MODELS

    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(p): g["weight_decay"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    expected = {
        "backbone.model.stem.norm1.weight": 0.05,
        "backbone.model.stages.1.downsample.norm.weight": 0.0,
        "backbone.model.stages.0.blocks.0.norm1.weight": 0.0,
        "backbone.norm2.weight": 0.0,
        "backbone.model.stages.0.blocks.0.attn.qkvo.weight": 0.05,
        "backbone.model.stages.0.blocks.0.ls1.gamma": 0.05,
    }
    for name, wd in expected.items():
        assert by_id[id(params[name])] == pytest.approx(wd), name
