"""Agent-PVT / Agent-Swin det/seg configs carry the official LeapLabTHU/Agent-Attention recipes (README numbers;
detection configs of its mmdet 2.x code, segmentation configs of its mmseg 0.x code), the official agent grids and
start from the released ImageNet weights (timm tags of the TsinghuaCloud files)."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PVT_GRIDS, SWIN_GRIDS = ((12, 12), (16, 16), (28, 28), (28, 28)), ((9, 9), (12, 12), (14, 14), (7, 7))
# config -> (model, drop path, published number): LeapLabTHU/Agent-Attention downstream READMEs and configs (207ce3e)
_C = "det/cascade-mask-rcnn_agent-swin"
ROWS = {
    "det/mask-rcnn_agent-pvt-t_fpn_1x_coco.py": ("agent_pvt_tiny", 0.1, "41.4 box AP / 38.7 mask AP"),
    "det/mask-rcnn_agent-pvt-s_fpn_1x_coco.py": ("agent_pvt_small", 0.2, "44.5 box AP / 41.2 mask AP"),
    "det/mask-rcnn_agent-pvt-m_fpn_1x_coco.py": ("agent_pvt_medium", 0.1, "45.9 box AP / 42.0 mask AP"),
    "det/mask-rcnn_agent-pvt-l_fpn_1x_coco.py": ("agent_pvt_large", 0.2, "46.9 box AP / 42.8 mask AP"),
    "det/retinanet_agent-pvt-t_fpn_1x_coco.py": ("agent_pvt_tiny", 0.1, "40.3 box AP"),
    "det/retinanet_agent-pvt-s_fpn_1x_coco.py": ("agent_pvt_small", 0.1, "44.1 box AP"),
    "det/retinanet_agent-pvt-m_fpn_1x_coco.py": ("agent_pvt_medium", 0.2, "45.8 box AP"),
    "det/retinanet_agent-pvt-l_fpn_1x_coco.py": ("agent_pvt_large", 0.3, "46.8 box AP"),
    "det/mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py": ("agent_swin_tiny", 0.1, "44.6 box AP / 40.7 mask AP"),
    "det/mask-rcnn_agent-swin-t_fpn_ms-crop-3x_coco.py": ("agent_swin_tiny", 0.1, "47.3 box AP / 42.7 mask AP"),
    "det/mask-rcnn_agent-swin-s_fpn_ms-crop-1x_coco.py": ("agent_swin_small", 0.1, "47.2 box AP / 42.7 mask AP"),
    "det/mask-rcnn_agent-swin-s_fpn_ms-crop-3x_coco.py": ("agent_swin_small", 0.1, "48.9 box AP / 43.8 mask AP"),
    f"{_C}-t_fpn_ms-crop-1x_coco.py": ("agent_swin_tiny", 0.1, "49.2 box AP / 42.7 mask AP"),
    f"{_C}-t_fpn_ms-crop-3x_coco.py": ("agent_swin_tiny", 0.1, "51.4 box AP / 44.5 mask AP"),
    f"{_C}-s_fpn_ms-crop-3x_coco.py": ("agent_swin_small", 0.1, "52.6 box AP / 45.5 mask AP"),
    f"{_C}-b_fpn_ms-crop-3x_coco.py": ("agent_swin_base", 0.4, "52.6 box AP / 45.3 mask AP"),
    "seg/fpn_agent-pvt-t_8xb2-40k_ade20k-512x512.py": ("agent_pvt_tiny", 0.1, "40.18 mIoU"),
    "seg/fpn_agent-pvt-s_8xb2-40k_ade20k-512x512.py": ("agent_pvt_small", 0.1, "44.18 mIoU"),
    "seg/fpn_agent-pvt-l_8xb2-40k_ade20k-512x512.py": ("agent_pvt_large", 0.1, "46.52 mIoU"),
    "seg/upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py": ("agent_swin_tiny", 0.3, "46.68 mIoU"),
}  # fmt: skip
AGENT_BIASES = ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias")


def _load(rel):
    from mmengine.config import Config

    return Config.fromfile(str(CONFIGS / rel))


def test_every_agent_config_is_checked():
    found = {f"{t}/{p.name}" for t in ("det", "seg") for p in (CONFIGS / t).glob("*agent-*.py")}
    assert found == set(ROWS)


@pytest.mark.parametrize("rel", sorted(ROWS))
def test_recipe(rel):
    model, drop_path, published = ROWS[rel]
    assert published in (CONFIGS / rel).read_text()
    cfg = _load(rel)
    bb = cfg.model.backbone
    swin = model.startswith("agent_swin")
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == model and bb.drop_path_rate == drop_path
    assert tuple(map(tuple, bb.model_kwargs["agent_shapes"])) == (SWIN_GRIDS if swin else PVT_GRIDS)
    assert bb.get("out_norms", False) is swin  # official norm0..3 (Swin) / raw stage maps (PVT)
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=f"timm:{model}.in1k")
    opt, keys = cfg.optim_wrapper.optimizer, cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
    if swin:
        assert all(keys[k] == dict(decay_mult=0.0) for k in ("norm", "relative_position_bias_table", *AGENT_BIASES))
    else:
        assert not keys  # decay on every parameter
    if rel.startswith("seg/"):
        assert cfg.model.decode_head.num_classes == 150 and cfg.train_dataloader.batch_size == 2
        if swin:
            assert (opt.lr, opt.weight_decay, cfg.train_cfg.max_iters) == (6e-5, 0.01, 160000)
            assert cfg.model.auxiliary_head.in_channels == 384
        else:
            assert (opt.lr, opt.weight_decay, cfg.train_cfg.max_iters) == (2e-4, 1e-4, 40000)
            (poly,) = cfg.param_scheduler
            assert (poly.type, poly.power, poly.eta_min) == ("PolyLR", 0.9, 0.0)
        return
    lr = 1e-4 if swin or "retinanet" in rel else 2e-4
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", lr, (0.9, 0.999), 0.05 if swin else 1e-4)
    epochs, steps = (36, [27, 33]) if "3x" in rel else (12, [8, 11])
    assert cfg.train_cfg.max_epochs == epochs
    assert [s for s in cfg.param_scheduler if s.type == "MultiStepLR"][0].milestones == steps
    assert cfg.train_dataloader.batch_size == 2
    if swin:  # the Swin multi-scale + crop augmentation, for 1x too
        assert any(t.type == "RandomChoice" for t in cfg.train_dataloader.dataset.pipeline)
    if "cascade" in rel:
        assert all(h.loss_bbox.type == "GIoULoss" and h.num_shared_convs == 4 for h in cfg.model.roi_head.bbox_head)


def test_dense_agent_grids_reach_the_mixers():
    import torch
    from mmengine.registry import MODELS

    import backbones.mm  # noqa: F401

    bb = _load("det/mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py").model.backbone.copy()
    bb.pop("init_cfg")
    bb.model_kwargs = dict(bb.model_kwargs, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                           agent_depths=(1, 1, 1, 0))  # fmt: skip
    from mmdet.registry import MODELS as DET_MODELS

    model = (DET_MODELS if "TimmBackboneAdapter" in DET_MODELS else MODELS).build(bb).eval()
    attns = [m for m in model.modules() if type(m).__name__ == "AgentAttention"]
    assert [a.agent_shape for a in attns] == [(9, 9), (12, 12), (14, 14)]
    outs = model(torch.randn(1, 3, 96, 160))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 24, 40), (32, 12, 20), (64, 6, 10), (128, 3, 5)]
