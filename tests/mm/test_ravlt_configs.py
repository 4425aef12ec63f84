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
    ("cascade-3x", "s"): "54.2 box AP / 46.8 mask AP", ("cascade-3x", "b"): "55.3 box AP / 47.7 mask AP",
    ("cascade-3x", "l"): "55.6 box AP / 48.0 mask AP",
    ("upernet", "s"): "50.7 mIoU", ("upernet", "b"): "52.5 mIoU", ("upernet", "l"): "53.2 mIoU",
}  # fmt: skip
# official file names: README rows -> the released dense checkpoints on the hub repository aldjalkdf/RAVLT
RELEASED = {"cascade-3x": "Casmaskrcnn_{}_3x_36_epoch.pth", "upernet": "uper_{}_2x.pth"}


def _path(task, size):
    if task == "upernet":
        return CONFIGS / "seg" / f"upernet_ravlt-{size}_8xb2-160k_ade20k-512x512.py"
    if task == "cascade-3x":
        return CONFIGS / "det" / f"cascade-mask-rcnn_ravlt-{size}_fpn_ms-crop-3x_coco.py"
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
    # official GLTA: nn.SyncBatchNorm stem / downsample norms, which its norm_eval (nn.BatchNorm2d only) leaves training
    assert bb.norm_eval is False and cfg.sync_bn == "torch" and bb.get("frozen_stages", -1) == -1
    hub = f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_{size.upper()}.pth"
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=hub)
    opt = cfg.optim_wrapper.optimizer
    if task in RELEASED:
        assert f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/{RELEASED[task].format(size)}" in path.read_text()
    if task == "upernet":  # official RALA_Uper_*_2x: UniFormer / CSWin UperNet recipe
        assert tuple(bb.out_indices) == (0, 1, 2, 3) and cfg.model.decode_head.in_channels == channels
        assert (cfg.model.decode_head.type, cfg.model.decode_head.channels) == ("UPerHead", 512)
        aux = cfg.model.auxiliary_head
        assert (aux.in_channels, aux.in_index, aux.channels, aux.loss_decode.loss_weight) == (channels[2], 2, 256, 0.4)
        assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 6e-5, (0.9, 0.999), 0.01)
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert keys["norm"] == dict(decay_mult=0.0) and keys["stem.norm"] == dict(decay_mult=1.0)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 1.0, 0.0, 160000)
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_cfg.val_interval == 8000
        assert cfg.train_dataloader.batch_size == 2 and cfg.model.test_cfg.mode == "whole"
        assert cfg.model.data_preprocessor.size == (512, 512) and cfg.model.decode_head.num_classes == 150
        return
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
    elif task == "cascade-3x":  # official casrcnn_*_3x: norm_decay_mult=0 besides the 'norm' key
        assert tuple(bb.out_indices) == (0, 1, 2, 3) and neck.in_channels == channels
        paramwise = cfg.optim_wrapper.paramwise_cfg
        assert paramwise.norm_decay_mult == 0.0 and paramwise.custom_keys == dict(norm=dict(decay_mult=0.0))
        heads = cfg.model.roi_head.bbox_head
        assert [h.bbox_coder.target_stds for h in heads] == [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                                                             [0.033, 0.033, 0.067, 0.067]]
        assert all(h.type == "ConvFCBBoxHead" and (h.num_shared_convs, h.num_shared_fcs) == (4, 1)
                   and h.loss_bbox == dict(type="GIoULoss", loss_weight=10.0) and h.reg_decoded_bbox
                   and h.norm_cfg.type == "SyncBN" for h in heads)
    else:
        assert tuple(bb.out_indices) == (0, 1, 2, 3) and neck.in_channels == channels
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert keys["norm"] == dict(decay_mult=0.0) and keys["stem.norm"] == dict(decay_mult=1.0)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert cfg.train_dataloader.batch_size == 2
    if task in ("mask-rcnn-3x", "cascade-3x"):  # Swin multi-scale + crop augmentation, 36 epochs
        assert (steps.type, steps.milestones) == ("MultiStepLR", [27, 33]) and cfg.train_cfg.max_epochs == 36
        assert any(t.type == "RandomChoice" for t in cfg.train_dataloader.dataset.pipeline)
        return
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11]) and cfg.train_cfg.max_epochs == 12
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official



def test_official_norm_eval_misses_sync_batchnorm():
    """Why the configs train the BatchNorms: the official GLTA.train() puts only nn.BatchNorm2d modules in eval mode,
    and the nn.SyncBatchNorm it builds is no BatchNorm2d."""
    from torch import nn

    assert not isinstance(nn.SyncBatchNorm(4), nn.BatchNorm2d) and isinstance(nn.BatchNorm2d(4), nn.BatchNorm2d)


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


def _build_small(task, size="s"):
    """The model of a real config with one block per stage (CPU: SyncBN -> BN), and its optimizer wrapper."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from backbones.mm.runner import cpu_adapt

    cfg = _load(_path(task, size))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.model_kwargs = dict(depths=(1, 1, 1, 1))
    cpu_adapt(cfg)
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


@pytest.mark.parametrize("task", ["cascade-3x", "upernet"])
def test_cascade_and_upernet_weight_decay_groups(task):
    """Cascade 3x (official norm_decay_mult=0): no decay on any norm layer, the stem BatchNorms and the cascade
    heads' BatchNorms included. UperNet 2x (official 'norm' key only): the stem BatchNorms (official
    patch_embed.proj.1/4/7/10) and the heads' BatchNorms (mmseg ConvModule '.bn') keep their decay."""
    model, wrapper = _build_small(task)
    by_id = {id(p): g["weight_decay"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    wd = 0.05 if task == "cascade-3x" else 0.01
    expected = {
        "backbone.model.stem.norm1.weight": 0.0 if task == "cascade-3x" else wd,
        "backbone.model.stages.1.downsample.norm.weight": 0.0,
        "backbone.model.stages.0.blocks.0.norm1.weight": 0.0,
        "backbone.norm2.weight": 0.0,
        "backbone.model.stages.0.blocks.0.attn.qkvo.weight": wd,
        "backbone.model.stages.0.blocks.0.ls1.gamma": wd,
    }
    if task == "cascade-3x":
        expected["roi_head.bbox_head.0.shared_convs.0.bn.weight"] = 0.0
        expected["roi_head.bbox_head.0.shared_convs.0.conv.weight"] = wd
    else:
        expected["decode_head.bottleneck.bn.weight"] = wd
        expected["decode_head.bottleneck.conv.weight"] = wd
    for name, decay in expected.items():
        assert by_id[id(params[name])] == pytest.approx(decay), name


def test_cascade_detector_and_upernet_segmentor_run():
    """The built Cascade Mask R-CNN (three GIoU 4conv1fc stages, masks) and UperNet (150 classes, auxiliary head on
    stage 3) run end to end on a RAVLT-S with one block per stage, at a small odd input size."""
    import torch
    from mmdet.structures import DetDataSample
    from mmseg.structures import SegDataSample

    h, w = 70, 90
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    detector, _ = _build_small("cascade-3x")
    detector.eval()
    with torch.no_grad():
        (result,) = detector(torch.randn(1, 3, h, w), [DetDataSample(metainfo=meta)], mode="predict")
        feats = detector.extract_feat(torch.randn(1, 3, 64, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 64 // s, 128 // s) for s in (4, 8, 16, 32, 64)]
    assert result.pred_instances.bboxes.shape[-1] == 4 and len(detector.roi_head.bbox_head) == 3
    assert result.pred_instances.masks.shape[-2:] == (h, w)

    segmentor, _ = _build_small("upernet")
    segmentor.eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 64, 96), mode="tensor")
        (pred,) = segmentor(torch.randn(1, 3, h, w), [SegDataSample(metainfo=meta)], mode="predict")
    assert tuple(logits.shape) == (1, 150, 16, 24)
    assert tuple(pred.pred_sem_seg.data.shape) == (1, h, w)


def test_cascade_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    """The Cascade 3x config through the runner on the tiny data set (CPU: sync_bn dropped, SyncBN heads -> BN)."""
    from backbones.mm import runner

    run = runner.main([str(_path("cascade-3x", "s")), "--tiny-data", tiny_data, "--work-dir", str(tmp_path / "c"),
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2 and type(run.model.backbone.model).__name__ == "RAVLT"
    assert len(run.model.roi_head.bbox_head) == 3
    metrics = {k: v.current() for k, v in run.message_hub.log_scalars.items() if k.startswith("val/coco/")}
    for kind in ("bbox", "segm"):
        assert 0.0 <= metrics[f"val/coco/{kind}_mAP"] <= 1.0
