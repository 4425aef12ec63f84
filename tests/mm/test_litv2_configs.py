"""LITv2 det/seg configs carry the official ziplab/LITv2 recipes (README numbers, detection/segmentation configs as
trained with its mmdet 2.x / mmseg 0.x code), and tiny-data smoke runs of one detection and one segmentation
config (train, evaluate with the real metric)."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RELEASE = "https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_{}.pth"
SIZES = {  # size -> (model, drop path, gradient checkpointing in the detection configs, channels)
    "s": ("litv2_small", 0.2, False, [96, 192, 384, 768]),
    "m": ("litv2_medium", 0.2, False, [96, 192, 384, 768]),
    "b": ("litv2_base", 0.3, True, [128, 256, 512, 1024]),
}
# (detector, size, window) -> published number quoted in the config (ziplab/LITv2 README)
DET = {
    ("retinanet", "s", 2): "44.0 box AP", ("retinanet", "s", 4): "43.7 box AP",
    ("retinanet", "m", 2): "46.0 box AP", ("retinanet", "m", 4): "45.8 box AP",
    ("retinanet", "b", 2): "46.7 box AP", ("retinanet", "b", 4): "46.3 box AP",
    ("mask-rcnn", "s", 2): "44.9 box AP / 40.8 mask AP", ("mask-rcnn", "s", 4): "44.7 box AP / 40.7 mask AP",
    ("mask-rcnn", "m", 2): "46.8 box AP / 42.3 mask AP", ("mask-rcnn", "m", 4): "46.5 box AP / 42.0 mask AP",
    ("mask-rcnn", "b", 2): "47.3 box AP / 42.6 mask AP", ("mask-rcnn", "b", 4): "46.8 box AP / 42.3 mask AP",
}
SEG = {"s": "44.3 mIoU", "m": "45.7 mIoU", "b": "47.2 mIoU"}


def _det_path(det, size, ws):
    return CONFIGS / "det" / f"{det}_litv2-{size}{'-ws4' if ws == 4 else ''}_fpn_1x_coco.py"


def _seg_path(size):
    return CONFIGS / "seg" / f"fpn_litv2-{size}_8xb2-80k_ade20k-512x512.py"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _check_backbone(cfg, size, ws, out_indices, with_cp, out_norms=True):
    model, dp, _, _ = SIZES[size]
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == model
    assert tuple(bb.out_indices) == out_indices
    assert (tuple(bb.out_norms) if isinstance(bb.out_norms, (list, tuple)) else bb.out_norms) == out_norms
    assert bb.drop_path_rate == dp and bb.get("with_cp", False) == with_cp
    assert bb.get("frozen_stages", -1) == -1 and not bb.get("norm_eval", False)
    # official detection/mmdet and segmentation/mmseg backbones/litv2.py: plain nn.BatchNorm2d in the DTM, no
    # norm_eval, never converted to SyncBatchNorm: they train, per GPU
    assert cfg.get("sync_bn") is None
    kw = bb.model_kwargs
    assert kw["alpha"] == 0.9 and tuple(kw["window_sizes"]) == (0, 0, ws, 1)
    assert kw.get("mask_padding", True) is (ws != 4)  # ws 4 pads at COCO sizes: official numerics
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=RELEASE.format(size))


def test_every_litv2_config_is_checked():
    found = {p.name for task in ("det", "seg") for p in (CONFIGS / task).glob("*litv2*.py")}
    assert found == {_det_path(*k).name for k in DET} | {_seg_path(s).name for s in SEG}


@pytest.mark.parametrize("key", list(DET), ids=lambda k: _det_path(*k).name)
def test_detection_recipe(key):
    det, size, ws = key
    path = _det_path(*key)
    cfg = _load(path)
    assert DET[key] in path.read_text().replace("\n#  ", "")
    channels = SIZES[size][3]
    neck = cfg.model.neck
    if det == "retinanet":  # official FPN(start_level=1) over 4 stages == ours over stages 1..3
        _check_backbone(cfg, size, ws, (1, 2, 3), SIZES[size][2])
        assert neck.in_channels == channels[1:] and neck.start_level == 0
        assert (neck.add_extra_convs, neck.num_outs) == ("on_input", 5)
    else:
        # official detection backbone: no norm on stage 0's output (norm1..norm3 only)
        _check_backbone(cfg, size, ws, (0, 1, 2, 3), SIZES[size][2], out_norms=(False, True, True, True))
        assert neck.in_channels == channels and neck.num_outs == 5
    opt = cfg.optim_wrapper.optimizer
    lr = 1e-4 if det == "retinanet" else 2e-4
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", lr, (0.9, 0.999), 1e-4)
    custom = cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
    # Mask R-CNN: no decay on norms; RetinaNet: the official (malformed) paramwise_cfg has no effect
    assert custom == ({} if det == "retinanet" else {"norm": dict(decay_mult=0.0)})
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11])
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official


@pytest.mark.parametrize("size", list(SEG))
def test_semantic_fpn_recipe(size):
    path = _seg_path(size)
    cfg = _load(path)
    assert SEG[size] in path.read_text().replace("\n#  ", "")
    _check_backbone(cfg, size, 2, (0, 1, 2, 3), False)  # official seg B: no checkpointing
    assert cfg.model.get("pretrained") is None
    assert cfg.model.neck.in_channels == SIZES[size][3] and cfg.model.neck.num_outs == 4
    head = cfg.model.decode_head
    assert (head.type, head.channels, head.num_classes, head.dropout_ratio) == ("FPNHead", 128, 150, 0.1)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 1e-4, 1e-4)
    assert not cfg.optim_wrapper.get("paramwise_cfg")
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 0.9, 1e-6, 80000)
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 2
    assert cfg.model.data_preprocessor.size == (512, 512)


def test_retinanet_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "retinanet")
    run = runner.main([str(_det_path("retinanet", "s", 2)), "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2
    assert type(run.model.backbone.model).__name__ == "LITv2"
    metrics = {k[len("val/"):]: v.current() for k, v in run.message_hub.log_scalars.items()
               if k.startswith("val/coco/")}
    for key in ("mAP", "mAP_50", "mAP_75"):
        assert 0.0 <= metrics[f"coco/bbox_{key}"] <= 1.0


def test_semantic_fpn_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "fpn")
    run = runner.main([str(_seg_path("s")), "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                       "default_hooks.checkpoint.interval=2"])
    assert run.iter == 2 and Path(work, "iter_2.pth").is_file()
    metrics = runner.test_main([str(_seg_path("s")), f"{work}/iter_2.pth", "--tiny-data", tiny_data,
                                "--work-dir", str(tmp_path / "test")])
    assert set(metrics) >= {"mIoU", "aAcc", "mAcc"} and 0.0 <= metrics["mIoU"] <= 100.0
