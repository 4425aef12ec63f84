"""EfficientViT-MSRA det/seg configs: the official downstream recipe (microsoft/Cream EfficientViT/downstream), and
a tiny-data smoke run of the RetinaNet config (train, evaluate with the COCO metric)."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RETINANET = CONFIGS / "det" / "retinanet_efficientvit-m4_fpn_1x_coco.py"
MASK_RCNN = CONFIGS / "det" / "mask-rcnn_efficientvit-m4_fpn_1x_coco.py"
SEM_FPN = CONFIGS / "seg" / "fpn_efficientvit-m4_8xb4-40k_ade20k-512x512.py"
OFFICIAL_M4 = "https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/efficientvit_m4.pth"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _check_backbone(cfg):
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == "efficientvit_m4"
    assert tuple(bb.out_indices) == (0, 1, 2) and bb.norm_eval is True  # official: all BN frozen
    assert bb.get("frozen_stages", -1) == -1
    assert bb.model_kwargs["img_size"] >= 400  # stage 3 at least 7 wide: windows 7 everywhere, as official
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=OFFICIAL_M4)
    assert cfg.model.neck.type == "EfficientViTFPN" and cfg.model.neck.in_channels == [128, 256, 384]
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {"attention_biases": dict(decay_mult=0.0)}


@pytest.mark.parametrize(
    "path, trans, extra, published",
    [(RETINANET, 1, "on_input", "32.7 box AP"), (MASK_RCNN, 2, False, "31.0 mask AP")],
    ids=["retinanet", "mask-rcnn"],
)
def test_detection_recipe(path, trans, extra, published):
    cfg = _load(path)
    assert published in path.read_text()
    _check_backbone(cfg)
    neck = cfg.model.neck
    assert (neck.num_extra_trans_convs, neck.num_outs, neck.get("add_extra_convs", False)) == (trans, 5, extra)
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 1e-4, (0.9, 0.999), 0.05)
    assert cfg.optim_wrapper.get("clip_grad") is None
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11])
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official


def test_semantic_fpn_recipe():
    cfg = _load(SEM_FPN)
    assert "No published number" in SEM_FPN.read_text()
    _check_backbone(cfg)
    assert cfg.model.neck.num_extra_trans_convs == 2
    assert cfg.model.decode_head.feature_strides == [4, 8, 16, 32, 64]
    assert cfg.train_cfg.max_iters == 40000 and cfg.train_dataloader.batch_size == 4


def test_retinanet_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "retinanet")
    run = runner.main([str(RETINANET), "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2
    assert type(run.model.neck).__name__ == "EfficientViTFPN"
    metrics = {k[len("val/"):]: v.current() for k, v in run.message_hub.log_scalars.items()
               if k.startswith("val/coco/")}
    for key in ("mAP", "mAP_50", "mAP_75"):
        assert 0.0 <= metrics[f"coco/bbox_{key}"] <= 1.0
