"""Every config under configs/det and configs/seg loads, builds its model and runs backbone + neck + heads.

Depths are cut to one block per stage (widths kept) so that the channel wiring of neck and heads is still
checked by a forward pass at 64x96; pretrained checkpoints (init_cfg) are not downloaded.
"""

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("backbones.models.focalnet")

pytestmark = pytest.mark.mm

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for task in ("det", "seg") for p in (ROOT / "configs" / task).glob("*.py"))

# Official hyper-parameters each config must carry (reference: microsoft/FocalNet det/seg configs and README).
_ROWS = [  # config, model, drop path, published number quoted in the config
    ("mask-rcnn_focalnet-t-srf_fpn_1x_coco.py", "focalnet_tiny_srf", 0.1, "45.9 box AP / 41.3 mask AP"),
    ("mask-rcnn_focalnet-t-lrf_fpn_1x_coco.py", "focalnet_tiny_lrf", 0.1, "46.1 box AP / 41.5 mask AP"),
    ("mask-rcnn_focalnet-s-srf_fpn_1x_coco.py", "focalnet_small_srf", 0.2, "48.0 box AP / 42.7 mask AP"),
    ("mask-rcnn_focalnet-s-lrf_fpn_1x_coco.py", "focalnet_small_lrf", 0.2, "48.3 box AP / 43.1 mask AP"),
    ("mask-rcnn_focalnet-b-srf_fpn_1x_coco.py", "focalnet_base_srf", 0.3, "48.8 box AP / 43.3 mask AP"),
    ("mask-rcnn_focalnet-b-lrf_fpn_1x_coco.py", "focalnet_base_lrf", 0.3, "49.0 box AP / 43.5 mask AP"),
    # 3x: the official configs raise drop path to 0.3 (T) / 0.5 (S, B)
    ("mask-rcnn_focalnet-t-srf_fpn_ms-3x_coco.py", "focalnet_tiny_srf", 0.3, "47.6 box AP / 42.6 mask AP"),
    ("mask-rcnn_focalnet-t-lrf_fpn_ms-3x_coco.py", "focalnet_tiny_lrf", 0.3, "48.0 box AP / 42.9 mask AP"),
    ("mask-rcnn_focalnet-s-srf_fpn_ms-3x_coco.py", "focalnet_small_srf", 0.5, "48.9 box AP / 43.6 mask AP"),
    ("mask-rcnn_focalnet-s-lrf_fpn_ms-3x_coco.py", "focalnet_small_lrf", 0.5, "49.3 box AP / 43.8 mask AP"),
    ("mask-rcnn_focalnet-b-srf_fpn_ms-3x_coco.py", "focalnet_base_srf", 0.5, "49.6 box AP / 44.1 mask AP"),
    ("mask-rcnn_focalnet-b-lrf_fpn_ms-3x_coco.py", "focalnet_base_lrf", 0.5, "49.8 box AP / 44.1 mask AP"),
    ("retinanet_focalnet-t-srf_fpn_1x_coco.py", "focalnet_tiny_srf", 0.1, "No published number"),
    ("upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py", "focalnet_tiny_srf", 0.3, "46.5 mIoU"),
    ("upernet_focalnet-s-srf_8xb2-160k_ade20k-512x512.py", "focalnet_small_srf", 0.3, "49.3 mIoU"),
    ("upernet_focalnet-b-srf_8xb2-160k_ade20k-512x512.py", "focalnet_base_srf", 0.3, "50.2 mIoU"),
    ("upernet_focalnet-t-lrf_8xb2-160k_ade20k-512x512.py", "focalnet_tiny_lrf", 0.3, "46.8 mIoU"),
    ("upernet_focalnet-s-lrf_8xb2-160k_ade20k-512x512.py", "focalnet_small_lrf", 0.3, "49.1 mIoU"),
    ("upernet_focalnet-b-lrf_8xb2-160k_ade20k-512x512.py", "focalnet_base_lrf", 0.3, "50.5 mIoU"),
]
EXPECTED = {name: dict(model=model, dp=dp, published=pub) for name, model, dp, pub in _ROWS}
# The FocalNet-T [11, 9, 9, 7] rows and detrex's FocalNet-L DINO rows (checked in test_other_focalnet_recipes):
# config -> (model, published number, focal windows, optimizer (lr, weight decay), epochs, lr steps)
OTHER = {
    "cascade-mask-rcnn_focalnet-t-lrf_fpn_ms-3x_coco.py": (
        "focalnet_tiny_lrf", "51.5 box AP", (11, 9, 9, 7), (1e-4, 0.05), 36, [27, 33]),
    "atss_focalnet-t-lrf_fpn_ms-3x_coco.py": (
        "focalnet_tiny_lrf", "49.6 box AP", (11, 9, 9, 7), (1e-4, 0.05), 36, [27, 33]),
    "sparse-rcnn_focalnet-t-lrf_fpn_300-proposals_crop-ms-480-800-3x_coco.py": (
        "focalnet_tiny_lrf", "49.9 box AP", (11, 9, 9, 7), (2.5e-5, 1e-4), 36, [27, 33]),
    "dino-4scale_focalnet-l-fl3_8xb2-12e_coco.py": ("focalnet_large_fl3", "57.5 box AP", 5, (1e-4, 1e-4), 12, [11]),
    "dino-4scale_focalnet-l-fl3_8xb2-36e_coco.py": ("focalnet_large_fl3", "58.3 box AP", 5, (1e-4, 1e-4), 36, [30]),
    "dino-4scale_focalnet-l-fl4_8xb2-12e_coco.py": ("focalnet_large_fl4", "58.0 box AP", 3, (1e-4, 1e-4), 12, [11]),
    "dino-5scale_focalnet-l-fl4_8xb2-12e_coco.py": ("focalnet_large_fl4", "58.5 box AP", 3, (1e-4, 1e-4), 12, [11]),
}


# Other families check their recipes in their own files (tests/mm/test_<family>_configs.py); here every config
# must at least say which published number it should reproduce, or that there is none.
_PUBLISHED = re.compile(r"Should reproduce|No published number")


def test_every_config_is_listed():
    assert {p.name for p in CONFIGS if "focalnet" in p.name} == set(EXPECTED) | set(OTHER)
    for p in CONFIGS:
        assert _PUBLISHED.search(p.read_text()), f"{p.name}: state the published number (or that none exists)"


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name in EXPECTED], ids=lambda p: p.name)
def test_config_recipe(path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    exp = EXPECTED[path.name]
    assert exp["published"] in path.read_text()
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == exp["model"]
    assert bb.drop_path_rate == exp["dp"]
    assert bb.out_norms is True and bb.model_kwargs["focal_windows"] == 9
    assert re.fullmatch(r"https://github\.com/microsoft/FocalNet/releases/download/v1\.0\.0/focalnet_\w+\.pth",
                        bb.init_cfg.checkpoint) and exp["model"] in bb.init_cfg.checkpoint
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == "AdamW" and tuple(opt.betas) == (0.9, 0.999)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys["norm"] == dict(decay_mult=0.0)
    if cfg.default_scope == "mmdet":
        assert (opt.lr, opt.weight_decay) == (1e-4, 0.05)
        epochs, steps = (36, [27, 33]) if "3x" in path.name else (12, [9, 11])
        assert cfg.train_cfg.max_epochs == epochs
        assert [s for s in cfg.param_scheduler if s.type == "MultiStepLR"][0].milestones == steps
        assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    else:
        assert (opt.lr, opt.weight_decay) == (6e-5, 0.01)
        assert cfg.train_cfg.max_iters == 160000
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
        assert (poly.type, poly.power, poly.eta_min) == ("PolyLR", 1.0, 0.0)
        assert cfg.train_dataloader.batch_size == 2 and "8xb2" in path.name
        assert cfg.model.data_preprocessor.size == (512, 512)
        assert cfg.model.auxiliary_head.in_index == 2
        assert cfg.model.decode_head.num_classes == 150


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_focalnet_recipes(name):
    from mmengine.config import Config

    model, published, windows, (lr, wd), epochs, steps = OTHER[name]
    path = ROOT / "configs" / "det" / name
    cfg = Config.fromfile(str(path))
    assert published.split()[0] in path.read_text()
    bb = cfg.model.backbone
    assert bb.model_name == model and bb.model_kwargs["focal_windows"] == windows and bb.out_norms is True
    assert bb.drop_path_rate == 0.3  # official T [11, 9, 9, 7] configs; detrex's FocalNet default
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", lr, wd)
    assert cfg.train_cfg.max_epochs == epochs
    assert [s for s in cfg.param_scheduler if s.type == "MultiStepLR"][0].milestones == steps
    pipeline = cfg.train_dataloader.dataset.pipeline
    choice = next(t for t in pipeline if t.type == "RandomChoice")  # multi-scale 480-800 or resize-crop-resize
    assert len(choice.transforms) == 2 and choice.transforms[1][1].type == "RandomCrop"
    if name.startswith("dino"):
        levels = int(name[5])
        assert cfg.model.get("num_feature_levels", 4) == levels and cfg.model.neck.num_outs == levels
        assert tuple(bb.out_indices) == tuple(range(5 - levels, 4))
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {"backbone": dict(lr_mult=0.1)}
        assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.1, norm_type=2)
        pe = cfg.model.positional_encoding  # detrex's sine encoding
        assert (pe.temperature, pe.offset, pe.normalize) == (10000, -0.5, True)
    elif name.startswith("sparse"):
        assert cfg.model.rpn_head.num_proposals == 300 and cfg.optim_wrapper.clip_grad.max_norm == 1
    elif name.startswith("cascade"):
        heads = cfg.model.roi_head.bbox_head
        assert [(h.type, h.num_shared_convs, h.num_shared_fcs, h.loss_bbox.type) for h in heads] == [
            ("ConvFCBBoxHead", 4, 1, "GIoULoss")] * 3
    else:
        assert cfg.model.type == "ATSS" and cfg.model.neck.add_extra_convs == "on_output"


# model-name regex -> constructor arguments that cut the depth to one block per stage (widths kept)
_SHALLOW = {
    r"focalnet_.*": dict(depths=(1, 1, 1, 1)),
    r"efficientvit_m\d": dict(depth=(1, 1, 1)),
    r"davit_.*": dict(depths=(1, 1, 1, 1)),
    r"litv2_.*": dict(depths=(1, 1, 1, 1)),
    r"biformer_.*": dict(depths=(1, 1, 1, 1)),
    r"transnext_.*": dict(depths=(1, 1, 1, 1)),
    r"ravlt_.*": dict(depths=(1, 1, 1, 1)),
    r"agent_pvt_.*": dict(depths=(1, 1, 1, 1)),
    r"agent_swin_.*": dict(depths=(1, 1, 2, 1), agent_depths=(1, 1, 1, 0)),
    r"halonet.*|sehalonet33ts|eca_halonext26ts": dict(layouts=("B", "A", "A", "A")),
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_and_wires(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from backbones.mm.runner import cpu_adapt

    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None
    shallow = next(v for k, v in _SHALLOW.items() if re.fullmatch(k, cfg.model.backbone.model_name))
    cfg.model.backbone.model_kwargs = dict(cfg.model.backbone.get("model_kwargs") or {}, **shallow)
    cpu_adapt(cfg)
    if cfg.model.type == "DINO":  # two-stage query selection needs more memory tokens than 64x96 gives for 900
        cfg.model.num_queries = 100
    scope = cfg.default_scope
    init_default_scope(scope)
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    model = (DET_MODELS if scope == "mmdet" else SEG_MODELS).build(cfg.model).eval()
    x = torch.randn(1, 3, 64, 96)
    meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96), batch_input_shape=(64, 96),
                scale_factor=(1.0, 1.0))
    with torch.no_grad():
        feats = model.extract_feat(x)
        if scope == "mmdet":
            from mmdet.structures import DetDataSample

            if type(model).__name__ == "DINO":  # queries decoded from the encoder memory of every level
                assert len(feats) == cfg.model.get("num_feature_levels", 4)
                cls_scores, boxes = model._forward(x, [DetDataSample(metainfo=meta)])
                assert cls_scores.shape[-2:] == (100, 80) and boxes.shape[-2:] == (100, 4)
            elif type(model).__name__ == "SparseRCNN":  # learnt proposals, 6 dynamic-conv stages
                assert len(feats) == 4
                model.init_weights()  # mmdet's head init (whole-image proposals): default init gives empty boxes
                result = model.predict(x, [DetDataSample(metainfo=meta)])[0]
                assert len(result.pred_instances) == 300
            else:
                head = model.rpn_head if hasattr(model, "rpn_head") else model.bbox_head
                outs = head(feats)
                assert len(outs[0]) == len(feats) == 5
        elif cfg.model.decode_head.type == "Mask2FormerHead":
            from mmseg.structures import SegDataSample

            cls_preds, mask_preds = model.decode_head(feats, [SegDataSample(metainfo=meta)])
            assert cls_preds[-1].shape[-1] == 151 and mask_preds[-1].shape[1] == 100  # 150 classes + void
        else:
            assert model.decode_head(feats).shape[1] == 150
            if model.with_auxiliary_head:
                assert model.auxiliary_head(feats).shape[1] == 150
            assert not any(type(m).__name__ == "SyncBatchNorm" for m in model.modules())  # cpu_adapt: BN
