"""BiFormer det/seg configs carry the official rayleizhu/BiFormer recipes (README numbers; detection configs of its
mmdet 2.x code, segmentation configs of its mmseg 0.x code), and tiny-data smoke runs of one detection and one
segmentation config (train, evaluate with the real metric)."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZES = {"s": ("biformer_small", [64, 128, 256, 512]), "b": ("biformer_base", [96, 192, 384, 768])}
# (config, size) -> (drop path, published number quoted in the config: rayleizhu/BiFormer README)
DET = {
    ("mask-rcnn", "s"): (0.2, "47.8 box AP / 43.2 mask AP"),
    ("mask-rcnn", "b"): (0.3, "48.6 box AP / 43.7 mask AP"),
    ("retinanet", "s"): (0.2, "45.9 box AP"),
    ("retinanet", "b"): (0.3, "47.1 box AP"),
}
SEG = {
    ("fpn", "s"): (0.15, "48.9 mIoU"),
    ("fpn", "b"): (0.3, "49.9 mIoU"),
    ("upernet", "s"): (0.3, "49.8 mIoU single-scale / 50.8 mIoU multi-scale"),
    ("upernet", "b"): (0.4, "51.0 mIoU single-scale / 51.7 mIoU multi-scale"),
}


def _det_path(det, size):
    return CONFIGS / "det" / f"{det}_biformer-{size}_fpn_1x_coco.py"


def _seg_path(seg, size):
    schedule = "8xb4-80k" if seg == "fpn" else "8xb2-160k"
    return CONFIGS / "seg" / f"{seg}_biformer-{size}_{schedule}_ade20k-512x512.py"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _check_backbone(cfg, size, drop_path, out_indices, regions, norm_eval):
    model, _ = SIZES[size]
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == model
    assert tuple(bb.out_indices) == out_indices and bb.drop_path_rate == drop_path
    assert bb.out_norms == dict(type="LN", eps=1e-6)  # official extra_norms: timm LayerNorm2d, eps 1e-6
    assert bb.get("norm_eval", False) is norm_eval and bb.get("frozen_stages", -1) == -1
    assert bb.model_kwargs == dict(num_regions=regions, mask_padding=False)  # official n_win, auto_pad numerics
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=f"checkpoints/{model}_in1k.pth")


def _decay_of(cfg, names):
    """Weight decay mmengine's optimizer constructor gives the named parameters of the (shallow) built model."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from backbones.mm.runner import cpu_adapt

    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.model_kwargs = dict(cfg.model.backbone.model_kwargs, depths=(1, 1, 1, 1))
    cpu_adapt(cfg)
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(p): g["weight_decay"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    return {n: by_id[id(params[n])] for n in names}


NORMS = {  # parameter -> decayed in the official runs? (official names: downsample_layers.* BN, norm1, extra_norms)
    "backbone.model.stem.norm1.weight": True,
    "backbone.model.stages.1.downsample.norm.bias": True,
    "backbone.model.stages.0.blocks.0.norm1.weight": False,
    "backbone.norm2.weight": False,
    "backbone.model.stages.0.blocks.0.attn.qkv.weight": True,
}


def test_every_biformer_config_is_checked():
    found = {p.name for task in ("det", "seg") for p in (CONFIGS / task).glob("*biformer*.py")}
    assert found == {_det_path(*k).name for k in DET} | {_seg_path(*k).name for k in SEG}


@pytest.mark.parametrize("key", list(DET), ids=lambda k: _det_path(*k).name)
def test_detection_recipe(key):
    det, size = key
    path = _det_path(*key)
    cfg = _load(path)
    drop_path, published = DET[key]
    assert published in path.read_text()
    channels = SIZES[size][1]
    neck = cfg.model.neck
    if det == "retinanet":  # official FPN(start_level=1) over 4 stages == ours over stages 1..3
        _check_backbone(cfg, size, drop_path, (1, 2, 3), 16, True)
        assert neck.in_channels == channels[1:] and neck.start_level == 0
        assert (neck.add_extra_convs, neck.num_outs) == ("on_input", 5)
    else:
        _check_backbone(cfg, size, drop_path, (0, 1, 2, 3), 16, True)
        assert neck.in_channels == channels and neck.num_outs == 5
    opt = cfg.optim_wrapper.optimizer
    wd = 1e-4 if det == "retinanet" else 0.05
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 1e-4, (0.9, 0.999), wd)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11])
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official
    # official object_detection/models_mm/biformer_mm.py: plain nn.BatchNorm2d (no SyncBN conversion, unlike the
    # segmentation copy), so its norm_eval (nn.BatchNorm2d only) does freeze the statistics
    assert cfg.get("sync_bn") is None


@pytest.mark.parametrize("key", [("mask-rcnn", "s"), ("retinanet", "s")], ids=lambda k: k[0])
def test_detection_weight_decay_groups(key):
    """Mask R-CNN: no decay on LayerNorms (official 'norm' key) but decay on the BatchNorms, whose official names
    hold no 'norm'; RetinaNet: decay on everything."""
    decay = _decay_of(_load(_det_path(*key)), [n for n in NORMS if key[0] == "mask-rcnn" or "norm2" not in n])
    for name, wd in decay.items():
        expect = 1e-4 if key[0] == "retinanet" else (0.05 if NORMS[name] else 0.0)
        assert wd == pytest.approx(expect), name


@pytest.mark.parametrize("key", list(SEG), ids=lambda k: _seg_path(*k).name)
def test_segmentation_recipe(key):
    seg, size = key
    path = _seg_path(*key)
    cfg = _load(path)
    drop_path, published = SEG[key]
    assert published in path.read_text().replace("\n#   ", " ")
    _check_backbone(cfg, size, drop_path, (0, 1, 2, 3), 8, False)
    assert cfg.sync_bn == "torch"  # the official segmentation backbone converts its BatchNorms to SyncBN
    assert cfg.model.data_preprocessor.size == (512, 512) and cfg.model.test_cfg.mode == "whole"
    channels = SIZES[size][1]
    opt = cfg.optim_wrapper.optimizer
    if seg == "fpn":
        assert cfg.model.neck.in_channels == channels and cfg.model.neck.num_outs == 4
        head = cfg.model.decode_head
        assert (head.type, head.channels, head.num_classes, head.dropout_ratio) == ("FPNHead", 128, 150, 0.1)
        assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 2e-4, 1e-4)
        assert not cfg.optim_wrapper.get("paramwise_cfg")
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end) == ("LinearLR", 0.1, 0, 1000)
        assert (cosine.type, cosine.T_max, cosine.eta_min_ratio) == ("CosineAnnealingLR", 80000, 1e-8)
        assert cfg.train_cfg.max_iters == 80000 and cfg.train_cfg.val_interval == 4000
        assert cfg.train_dataloader.batch_size == 4  # x 8 GPUs = 32
    else:
        head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
        assert (head.type, head.channels, tuple(head.pool_scales)) == ("UPerHead", 512, (1, 2, 3, 6))
        assert head.in_channels == channels and head.num_classes == 150
        assert (aux.in_index, aux.in_channels, aux.channels, aux.loss_decode.loss_weight) == (2, channels[2], 256, 0.4)
        assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 6e-5, (0.9, 0.999), 0.01)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
        assert (poly.type, poly.power, poly.eta_min) == ("PolyLR", 1.0, 0.0)
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2


def test_upernet_weight_decay_groups():
    decay = _decay_of(_load(_seg_path("upernet", "s")), list(NORMS))
    for name, wd in decay.items():
        assert wd == pytest.approx(0.01 if NORMS[name] else 0.0), name


def test_routing_regions_follow_the_input_at_detection_size():
    """16 x 16 regions per stage at COCO sizes: the region size, not the count, follows the image."""
    import timm

    import backbones  # noqa: F401

    cfg = _load(_det_path("mask-rcnn", "s"))
    kwargs = dict(cfg.model.backbone.model_kwargs, embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), head_dim=8)
    model = timm.create_model("biformer_small", **kwargs).eval()
    attn = model.stages[0].blocks[0].attn
    seen = []
    hook = attn.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1:3]))
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 800, 1216), intermediates_only=True)
    hook.remove()
    assert attn.num_regions == 16 and tuple(seen[0]) == (200, 304)  # regions of ceil(200/16) x ceil(304/16)
    assert [tuple(f.shape[-2:]) for f in feats] == [(200, 304), (100, 152), (50, 76), (25, 38)]


def test_retinanet_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "retinanet")
    run = runner.main([str(_det_path("retinanet", "s")), "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2
    assert type(run.model.backbone.model).__name__ == "BiFormer"
    assert run.model.backbone.model.stages[1].blocks[0].attn.num_regions == 16
    metrics = {k[len("val/"):]: v.current() for k, v in run.message_hub.log_scalars.items()
               if k.startswith("val/coco/")}
    for key in ("mAP", "mAP_50", "mAP_75"):
        assert 0.0 <= metrics[f"coco/bbox_{key}"] <= 1.0


def test_semantic_fpn_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    path = str(_seg_path("fpn", "s"))
    work = str(tmp_path / "fpn")
    run = runner.main([path, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                       "default_hooks.checkpoint.interval=2"])
    assert run.iter == 2 and Path(work, "iter_2.pth").is_file()
    assert run.model.backbone.model.stages[0].blocks[0].attn.num_regions == 8
    metrics = runner.test_main([path, f"{work}/iter_2.pth", "--tiny-data", tiny_data,
                                "--work-dir", str(tmp_path / "test")])
    assert set(metrics) >= {"mIoU", "aAcc", "mAcc"} and 0.0 <= metrics["mIoU"] <= 100.0
