"""HaloNet det/seg configs: mmdet/mmseg's ResNet-50 recipes on halonet50ts (the paper published no such number),
timm's weights through the adapter, and a tiny-data smoke run of the Mask R-CNN config (train, COCO metric)."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MASK_RCNN = CONFIGS / "det" / "mask-rcnn_halonet50ts_fpn_1x_coco.py"
RETINANET = CONFIGS / "det" / "retinanet_halonet50ts_fpn_1x_coco.py"
UPERNET = CONFIGS / "seg" / "upernet_halonet50ts_4xb4-160k_ade20k-512x512.py"
TIMM_WEIGHTS = dict(type="Pretrained", checkpoint="timm:halonet50ts.a1h_in1k")


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def test_every_halonet_config_is_checked():
    found = {p for d in ("det", "seg") for p in (CONFIGS / d).glob("*halonet*.py")}
    assert found == {MASK_RCNN, RETINANET, UPERNET}
    for path in found:
        assert "No published number" in path.read_text()


@pytest.mark.parametrize(
    "path, out_indices, channels, lr",
    [(MASK_RCNN, (1, 2, 3, 4), [256, 512, 1024, 2048], 0.02), (RETINANET, (2, 3, 4), [512, 1024, 2048], 0.01)],
    ids=["mask-rcnn", "retinanet"],
)
def test_detection_recipe_is_mmdets_resnet50_1x(path, out_indices, channels, lr):
    cfg = _load(path)
    bb = cfg.model.backbone
    assert (bb.type, bb.model_name, tuple(bb.out_indices)) == ("TimmBackboneAdapter", "halonet50ts", out_indices)
    assert bb.norm_eval is True and bb.frozen_stages == 1 and not bb.get("out_norms") and bb.init_cfg == TIMM_WEIGHTS
    assert cfg.model.neck.in_channels == channels
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", lr, 0.9, 1e-4)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11])
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs


def test_segmentation_recipe_is_mmsegs_resnet50_upernet():
    cfg = _load(UPERNET)
    bb = cfg.model.backbone
    assert (bb.model_name, tuple(bb.out_indices), bb.norm_eval) == ("halonet50ts", (1, 2, 3, 4), False)
    assert bb.init_cfg == TIMM_WEIGHTS and cfg.sync_bn == "torch" and cfg.model.pretrained is None
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 0.01, 0.9, 5e-4)
    (poly,) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 0.9, 1e-4, 160000)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 4 and "4xb4" in UPERNET.name
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.in_channels == [256, 512, 1024, 2048] and head.num_classes == 150
    assert (aux.in_channels, aux.in_index, aux.num_classes) == (1024, 2, 150)
    assert cfg.model.data_preprocessor.size == (512, 512)


def test_adapter_loads_timm_weights_and_matches_the_classifier_features():
    """timm's halonet50ts state dict (what the timm: tag downloads) loads into the adapter unchanged; the adapter
    returns the classification model's stride-4..32 features, also at a size timm refuses (padding inside)."""
    import timm

    import backbones
    from backbones.mm import TimmBackboneAdapter

    small = dict(stem_chs=16, widths=(32, 64, 64, 128), layouts=("B", "BA", "BA", "BA"), num_heads=2)
    torch.manual_seed(0)
    src = timm.create_model("halonet50ts", **small).eval()
    adapter = TimmBackboneAdapter("halonet50ts", out_indices=(1, 2, 3, 4), model_kwargs=small).eval()
    report = adapter.load_pretrained({"state_dict": src.state_dict()})
    assert not report["missing"] and report["unexpected"] == ["head.fc.bias", "head.fc.weight"]
    assert backbones.is_replacement("halonet50ts")
    x = torch.randn(1, 3, 100, 76)
    with torch.no_grad():
        ours = adapter(x)
        ref = src.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert [f.shape[-2:] for f in ours] == [(25, 19), (13, 10), (7, 5), (4, 3)]


def test_mask_rcnn_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "mask-rcnn")
    run = runner.main(
        [
            str(MASK_RCNN),
            "--tiny-data",
            tiny_data,
            "--work-dir",
            work,
            "--cfg-options",
            "train_dataloader.dataset.indices=4",
        ]
    )
    assert run.iter == 2
    assert type(run.model.backbone.model).__name__ == "HaloNet"
    metrics = {
        k[len("val/") :]: v.current() for k, v in run.message_hub.log_scalars.items() if k.startswith("val/coco/")
    }
    for kind in ("bbox", "segm"):
        assert 0.0 <= metrics[f"coco/{kind}_mAP"] <= 1.0
