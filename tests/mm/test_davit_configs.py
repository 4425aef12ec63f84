"""DaViT det/seg configs: the official recipe (dingmyu/davit mmdet/ and mmseg/ configs, README numbers), the
adapter loading official-layout weights, and tiny-data smoke runs of one detection and one segmentation config."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DET = CONFIGS / "det"
SEG = CONFIGS / "seg"

# config, model, channels of stage 0, published number quoted in the config
MASK_RCNN = [
    ("mask-rcnn_davit-t_fpn_1x_coco.py", "davit_tiny", 96, "45.0 box AP / 41.1 mask AP"),
    ("mask-rcnn_davit-s_fpn_1x_coco.py", "davit_small", 96, "47.7 box AP / 42.9 mask AP"),
    ("mask-rcnn_davit-b_fpn_1x_coco.py", "davit_base", 128, "48.2 box AP / 43.3 mask AP"),
]
RETINANET = [
    ("retinanet_davit-t_fpn_1x_coco.py", "davit_tiny", 96, "44.0 box AP"),
    ("retinanet_davit-s_fpn_1x_coco.py", "davit_small", 96, "46.0 box AP"),
    ("retinanet_davit-b_fpn_1x_coco.py", "davit_base", 128, "46.7 box AP"),
]
# 3x rows (official davit_{maskrcnn,retinanet}_3x_coco.py: drop path 0.2, 36 epochs, steps [27, 33])
MASK_RCNN_3X = [
    ("mask-rcnn_davit-t_fpn_ms-3x_coco.py", "davit_tiny", 96, "47.4 box AP / 42.9 mask AP"),
    ("mask-rcnn_davit-s_fpn_ms-3x_coco.py", "davit_small", 96, "49.5 box AP / 44.3 mask AP"),
    ("mask-rcnn_davit-b_fpn_ms-3x_coco.py", "davit_base", 128, "49.9 box AP / 44.6 mask AP"),
]
RETINANET_3X = [
    ("retinanet_davit-t_fpn_ms-3x_coco.py", "davit_tiny", 96, "46.5 box AP"),
    ("retinanet_davit-s_fpn_ms-3x_coco.py", "davit_small", 96, "48.2 box AP"),
    ("retinanet_davit-b_fpn_ms-3x_coco.py", "davit_base", 128, "48.7 box AP"),
]
UPERNET = [
    ("upernet_davit-t_8xb2-160k_ade20k-512x512.py", "davit_tiny", 96, "46.3 mIoU"),
    ("upernet_davit-s_8xb2-160k_ade20k-512x512.py", "davit_small", 96, "48.8 mIoU"),
    ("upernet_davit-b_8xb2-160k_ade20k-512x512.py", "davit_base", 128, "49.4 mIoU"),
]


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def test_every_davit_config_is_checked():
    listed = {name for name, *_ in MASK_RCNN + RETINANET + UPERNET + MASK_RCNN_3X + RETINANET_3X}
    assert {p.name for d in (DET, SEG) for p in d.glob("*davit*.py")} == listed


def _check_backbone(cfg, model, drop_path, out_indices):
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == model
    assert tuple(bb.out_indices) == out_indices and bb.out_norms is True  # official norm{i} on every output
    assert bb.drop_path_rate == drop_path and bb.get("frozen_stages", -1) == -1
    assert not bb.get("model_kwargs")  # window 7, 2x2 downsample: the classification architecture
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=f"timm:{model}.msft_in1k")


def _check_det_schedule(cfg, epochs=12, steps_at=(8, 11)):
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 1e-4, (0.9, 0.999), 0.05)
    assert not cfg.optim_wrapper.get("paramwise_cfg") and cfg.optim_wrapper.get("clip_grad") is None
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", list(steps_at))
    assert cfg.train_cfg.max_epochs == epochs and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    pipeline = cfg.train_dataloader.dataset.pipeline
    choice = next(t for t in pipeline if t.type == "RandomChoice")  # multi-scale 480-800 or resize-crop-resize
    assert len(choice.transforms) == 2 and choice.transforms[1][1].type == "RandomCrop"
    assert cfg.model.data_preprocessor.pad_size_divisor == 32


def _schedule(name):
    """(drop path, epochs, steps) of the official 1x / 3x configs."""
    return (0.2, 36, (27, 33)) if "3x" in name else (0.1, 12, (8, 11))


@pytest.mark.parametrize("name, model, c, published", MASK_RCNN + MASK_RCNN_3X,
                         ids=[r[0] for r in MASK_RCNN + MASK_RCNN_3X])
def test_mask_rcnn_recipe(name, model, c, published):
    cfg = _load(DET / name)
    assert published in (DET / name).read_text()
    drop_path, epochs, steps = _schedule(name)
    _check_backbone(cfg, model, drop_path, (0, 1, 2, 3))
    assert cfg.model.neck.in_channels == [c, 2 * c, 4 * c, 8 * c]
    _check_det_schedule(cfg, epochs, steps)
    assert any(t.type == "LoadAnnotations" and t.with_mask for t in cfg.train_dataloader.dataset.pipeline)


@pytest.mark.parametrize("name, model, c, published", RETINANET + RETINANET_3X,
                         ids=[r[0] for r in RETINANET + RETINANET_3X])
def test_retinanet_recipe(name, model, c, published):
    cfg = _load(DET / name)
    assert published in (DET / name).read_text()
    drop_path, epochs, steps = _schedule(name)
    _check_backbone(cfg, model, drop_path, (1, 2, 3))
    neck = cfg.model.neck
    assert (neck.in_channels, neck.start_level, neck.add_extra_convs, neck.num_outs) == (
        [2 * c, 4 * c, 8 * c], 0, "on_input", 5)
    _check_det_schedule(cfg, epochs, steps)


@pytest.mark.parametrize("name, model, c, published", UPERNET, ids=[r[0] for r in UPERNET])
def test_upernet_recipe(name, model, c, published):
    cfg = _load(SEG / name)
    assert published in (SEG / name).read_text()
    _check_backbone(cfg, model, 0.3, (0, 1, 2, 3))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 6e-5, (0.9, 0.999), 0.01)
    assert not cfg.optim_wrapper.get("paramwise_cfg")
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 1.0, 0.0, 160000)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2 and "8xb2" in name
    assert cfg.model.data_preprocessor.size == (512, 512)
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.in_channels == [c, 2 * c, 4 * c, 8 * c] and head.channels == 512 and head.num_classes == 150
    assert (aux.in_channels, aux.in_index, aux.loss_decode.loss_weight) == (4 * c, 2, 0.4)


def test_adapter_loads_official_detection_weights():
    """An official dingmyu/davit detection checkpoint (backbone.patch_embeds..., backbone.norm{i}, neck keys):
    the backbone and its per-output norms load, outputs equal the classification model's normalised stages."""
    import timm
    from timm.layers import LayerNorm2d

    from backbones.mm import TimmBackboneAdapter

    small = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1))
    torch.manual_seed(0)
    src = timm.create_model("davit_tiny", **small).eval()
    official = {}
    for k, v in src.state_dict().items():
        if k.startswith("head."):
            continue
        k = k.replace("stem.conv.", "patch_embeds.0.proj.").replace("stem.norm.", "patch_embeds.0.norm.")
        for s in (1, 2, 3):
            k = k.replace(f"stages.{s}.downsample.conv.", f"patch_embeds.{s}.proj.")
            k = k.replace(f"stages.{s}.downsample.norm.", f"patch_embeds.{s}.norm.")
        k = k.replace("stages.", "main_blocks.").replace(".blocks.", ".").replace(".cpe1.", ".cpe.0.")
        official["backbone." + k.replace(".cpe2.", ".cpe.1.")] = v
    norms = [LayerNorm2d(c) for c in small["embed_dims"]]
    for i, n in enumerate(norms):
        torch.nn.init.normal_(n.weight)
        official.update({f"backbone.norm{i}.{k}": v for k, v in n.state_dict().items()})
    official["neck.fpn_convs.0.conv.weight"] = torch.zeros(4, 4, 3, 3)

    adapter = TimmBackboneAdapter("davit_tiny", out_norms=True, model_kwargs=small).eval()
    report = adapter.load_pretrained({"state_dict": official, "meta": {}})
    assert not report["missing"], report
    x = torch.randn(1, 3, 75, 61)
    with torch.no_grad():
        ours = adapter(x)
        ref = src.forward_intermediates(x, intermediates_only=True)
    for a, b, n in zip(ours, ref, norms, strict=True):
        torch.testing.assert_close(a, n(b), rtol=1e-5, atol=1e-5)


def test_mask_rcnn_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    config = str(DET / "mask-rcnn_davit-t_fpn_1x_coco.py")
    work = str(tmp_path / "mask-rcnn")
    run = runner.main([config, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2
    assert type(run.model.backbone.model).__name__ == "DaVit"
    metrics = {k[len("val/"):]: v.current() for k, v in run.message_hub.log_scalars.items()
               if k.startswith("val/coco/")}
    for kind in ("bbox", "segm"):
        assert 0.0 <= metrics[f"coco/{kind}_mAP"] <= 1.0


def test_upernet_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    config = str(SEG / "upernet_davit-t_8xb2-160k_ade20k-512x512.py")
    work = str(tmp_path / "upernet")
    run = runner.main([config, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                       "default_hooks.checkpoint.interval=2"])
    assert run.iter == 2 and Path(work, "iter_2.pth").is_file()
    assert type(run.model.backbone.model).__name__ == "DaVit"
    metrics = runner.test_main([config, f"{work}/iter_2.pth", "--tiny-data", tiny_data,
                                "--work-dir", str(tmp_path / "test")])
    assert 0.0 <= metrics["mIoU"] <= 100.0
