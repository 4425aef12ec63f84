"""Official detector / segmentor checkpoints load strictly through DenseCheckpointLayoutHook (backbones.mm.checkpoint).

Each test builds the mmdet / mmseg model of a real config (one block per stage), gives every tensor a random
value, renames the state dict to the layout the official file has (key names read off the official code, written
here independently of the converter), and loads it as mmengine's Runner does (after_load_checkpoint, then
load_state_dict): every model tensor must come back with its value. Wrong family / wrong detector checkpoints
must be errors that name the first missing and unexpected keys.
"""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from dense_official_layouts import (
    agent_pvt_official,
    agent_swin_dense_official,
    davit_official,
    efficientvit_official,
    focalnet_official,
    litv2_official,
    mmdet_dino_to_detrex,
    ravlt_dense_official,
    transnext_official,
    with_official_backbone,
)

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DET = CONFIGS / "det"


def _build(config: str, **backbone_kwargs):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import backbones.mm  # noqa: F401

    cfg = Config.fromfile(str(DET / config))
    bb = cfg.model.backbone
    bb.init_cfg = None
    depth = dict(depth=(1, 1, 1)) if bb.model_name.startswith("efficientvit") else dict(depths=(1, 1, 1, 1))
    bb.model_kwargs = dict(bb.get("model_kwargs") or {}, **{**depth, **backbone_kwargs})
    if "embed_dim" in backbone_kwargs:
        c = backbone_kwargs["embed_dim"]
        cfg.model.neck.in_channels = [c * 2**i for i in bb.out_indices]
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return model


def _load_like_the_runner(model, checkpoint, path="official.pth", strict=True):
    """What Runner.load_checkpoint does: hooks' after_load_checkpoint, then a non-strict load of 'state_dict'."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    from backbones.mm.checkpoint import DenseCheckpointLayoutHook

    runner = SimpleNamespace(model=model, _load_from=path)
    DenseCheckpointLayoutHook(strict=strict).after_load_checkpoint(runner, checkpoint)
    _load_checkpoint_to_model(model, checkpoint, strict=False)


def _roundtrip(model, to_official, wrap=lambda sd: {"meta": {}, "state_dict": sd}):
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    official = to_official(expected)
    assert set(official) != set(expected)  # the official file really is in another layout
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    _load_like_the_runner(model, wrap(official))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)


def test_focalnet_mask_rcnn_mmdet2_file_loads_strictly():
    model = _build("mask-rcnn_focalnet-t-lrf_fpn_1x_coco.py")
    _roundtrip(model, with_official_backbone(focalnet_official),
               wrap=lambda sd: {"meta": {"mmdet_version": "2.25.0"}, "state_dict": sd})


def test_focalnet_cascade_and_sparse_rcnn_files_load_strictly():
    for config in ("cascade-mask-rcnn_focalnet-t-lrf_fpn_ms-3x_coco.py",
                   "sparse-rcnn_focalnet-t-lrf_fpn_300-proposals_crop-ms-480-800-3x_coco.py"):
        _roundtrip(_build(config), with_official_backbone(focalnet_official))


@pytest.mark.parametrize("config, rename", [
    ("mask-rcnn_davit-t_fpn_ms-3x_coco.py", davit_official),  # mmdet 2.x
    ("../seg/upernet_davit-t_8xb2-160k_ade20k-512x512.py", davit_official),  # mmseg 0.x
    ("mask-rcnn_litv2-s_fpn_1x_coco.py", litv2_official),  # mmdet 2.x, norm1..3 on stages 1..3 only
    ("mask-rcnn_transnext-t_fpn_1x_coco.py", transnext_official),  # mmdet 2.28
    ("../seg/upernet_transnext-t_8xb2-160k_ade20k-512x512.py", transnext_official),  # mmseg 0.30
    ("mask-rcnn_efficientvit-m4_fpn_1x_coco.py", efficientvit_official),  # mmdet 2.x, EfficientViTFPN neck
    ("atss_focalnet-t-lrf_fpn_ms-3x_coco.py", focalnet_official),  # mmdet 2.x, norm1..3 on stages 1..3
    ("../seg/upernet_focalnet-t-lrf_8xb2-160k_ade20k-512x512.py", focalnet_official),  # mmseg 0.x
    ("retinanet_davit-t_fpn_ms-3x_coco.py", davit_official),  # mmdet 2.x, stages 1..3
], ids=["davit-mask-rcnn-3x", "davit-upernet", "litv2-mask-rcnn", "transnext-mask-rcnn", "transnext-upernet",
        "efficientvit-mask-rcnn", "focalnet-atss", "focalnet-upernet", "davit-retinanet"])
def test_other_official_files_load_strictly(config, rename):
    model = _build(config)
    to_official = with_official_backbone(rename)
    if config.startswith("retinanet_davit"):  # the official DaViT backbone has norm0..3 whatever the neck reads
        c = model.backbone.channels[0] // 2
        to_official = (lambda f: lambda sd: {**f(sd), "backbone.norm0.weight": torch.ones(c),
                                             "backbone.norm0.bias": torch.zeros(c)})(to_official)
    _roundtrip(model, to_official)


# (config, official layout of the whole state dict: model -> (state dict -> official state dict), backbone kwargs)
_AGENT_SWIN_SMALL = dict(depths=(2, 2, 2, 2), agent_depths=(1, 1, 1, 0))  # agent and (shifted) Swin blocks
_RAVLT_AND_AGENT = {
    "ravlt-mask-rcnn": ("mask-rcnn_ravlt-t_fpn_1x_coco.py", ravlt_dense_official, {}),  # mmdet 2.x
    "ravlt-mask-rcnn-3x": ("mask-rcnn_ravlt-s_fpn_ms-crop-3x_coco.py", ravlt_dense_official, {}),
    "ravlt-retinanet": ("retinanet_ravlt-t_fpn_1x_coco.py", ravlt_dense_official, {}),  # extra_norms.0 unused
    "ravlt-fpn": ("../seg/fpn_ravlt-t_8xb2-80k_ade20k-512x512.py", ravlt_dense_official, {}),  # mmseg 0.x
    "ravlt-cascade": ("cascade-mask-rcnn_ravlt-s_fpn_ms-crop-3x_coco.py", ravlt_dense_official, {}),
    "ravlt-upernet": ("../seg/upernet_ravlt-s_8xb2-160k_ade20k-512x512.py", ravlt_dense_official, {}),
    "agent-pvt-mask-rcnn": ("mask-rcnn_agent-pvt-t_fpn_1x_coco.py",
                            lambda model: with_official_backbone(agent_pvt_official), {}),
    "agent-pvt-retinanet": ("retinanet_agent-pvt-s_fpn_1x_coco.py",
                            lambda model: with_official_backbone(agent_pvt_official), {}),
    "agent-pvt-fpn": ("../seg/fpn_agent-pvt-t_8xb2-40k_ade20k-512x512.py",
                      lambda model: with_official_backbone(agent_pvt_official), {}),
    "agent-swin-mask-rcnn": ("mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py", lambda model: agent_swin_dense_official,
                             _AGENT_SWIN_SMALL),
    "agent-swin-cascade": ("cascade-mask-rcnn_agent-swin-s_fpn_ms-crop-3x_coco.py",
                           lambda model: agent_swin_dense_official, _AGENT_SWIN_SMALL),
    "agent-swin-upernet": ("../seg/upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py",
                           lambda model: agent_swin_dense_official, _AGENT_SWIN_SMALL),
}


@pytest.mark.parametrize("case", list(_RAVLT_AND_AGENT))
def test_ravlt_and_agent_official_files_load_strictly(case):
    """qhfan/RALA (GLTA: extra_norms.i.norm, RoPE.angle buffers, 1x1-conv weights) and LeapLabTHU/Agent-Attention
    (AgentPVT without output norms; AgentSwinTransformer with norm{i}, fused agent qkv, relative_position_index
    buffers) mmdet 2.x / mmseg 0.x detector and segmentor files."""
    config, layout, kwargs = _RAVLT_AND_AGENT[case]
    model = _build(config, **kwargs)
    _roundtrip(model, layout(model), wrap=lambda sd: {"meta": {"mmdet_version": "2.28.2"}, "state_dict": sd})


def test_transnext_dino_mmdet3_file_loads_strictly():
    model = _build("dino-4scale_transnext-t_8xb2-12e_coco.py")
    assert not hasattr(model.backbone, "norm1")  # stage norms are part of the backbone: norm1..4 -> stages.i.norm
    _roundtrip(model, with_official_backbone(transnext_official))


def test_transnext_mask2former_mmseg1_file_loads_strictly():
    model = _build("../seg/mask2former_transnext-t_8xb2-160k_ade20k-512x512.py")
    _roundtrip(model, with_official_backbone(transnext_official))


@pytest.mark.parametrize("config", ["dino-4scale_focalnet-l-fl3_8xb2-12e_coco.py",
                                    "dino-5scale_focalnet-l-fl4_8xb2-12e_coco.py"])
def test_detrex_focalnet_dino_file_loads_strictly(config):
    model = _build(config, embed_dim=16)
    # detectron2's checkpointer saves {'model': state dict, 'iteration': ...}
    _roundtrip(model, mmdet_dino_to_detrex, wrap=lambda sd: {"model": sd, "iteration": 89999})


def test_wrong_family_is_an_error_naming_the_keys():
    transnext = _build("dino-4scale_transnext-t_8xb2-12e_coco.py")
    official = with_official_backbone(transnext_official)(transnext.state_dict())
    focalnet = _build("dino-4scale_focalnet-l-fl3_8xb2-12e_coco.py", embed_dim=16)
    with pytest.raises(ValueError, match="does not fit this DINO") as err:
        _load_like_the_runner(focalnet, {"state_dict": official}, path="transnext_dino.pth")
    msg = str(err.value)
    assert "transnext_dino.pth" in msg and "another model family" in msg
    assert re.search(r"first missing: \['backbone\.model\.", msg)
    assert re.search(r"first unexpected: \['backbone\.(patch_embed1|block1)\.", msg)


def test_wrong_detector_is_an_error_naming_the_first_missing_and_unexpected_keys(mm_log):
    mask_rcnn = _build("mask-rcnn_focalnet-t-lrf_fpn_1x_coco.py")
    official = with_official_backbone(focalnet_official)(mask_rcnn.state_dict())
    cascade = _build("cascade-mask-rcnn_focalnet-t-lrf_fpn_ms-3x_coco.py",
                     focal_windows=9)  # same backbone as the Mask R-CNN file: only the RoI heads differ
    with pytest.raises(ValueError) as err:
        _load_like_the_runner(cascade, {"state_dict": dict(official)}, path="mask_rcnn.pth")
    msg = str(err.value)
    assert "mask_rcnn.pth" in msg and "CascadeRCNN" in msg
    assert re.search(r"missing, first: \['roi_head\.bbox_head\.0\.", msg)
    assert re.search(r"unexpected, first: \['roi_head\.bbox_head\.fc_cls\.", msg)
    assert "strict=False" in msg
    # strict=False: the matching part loads (backbone, neck, RPN), with the same report as a warning
    before = cascade.roi_head.bbox_head[0].fc_cls.weight.clone()
    _load_like_the_runner(cascade, {"state_dict": dict(official)}, strict=False)
    torch.testing.assert_close(cascade.neck.lateral_convs[0].conv.weight, official["neck.lateral_convs.0.conv.weight"])
    torch.testing.assert_close(cascade.roi_head.bbox_head[0].fc_cls.weight, before)
    assert any("does not fit" in m for m in mm_log)


def test_runner_adds_the_hook_to_every_config():
    from backbones.mm.runner import prepare_config

    cfg, notes = prepare_config(str(DET / "retinanet_davit-t_fpn_1x_coco.py"))
    assert [h.type for h in cfg.custom_hooks].count("DenseCheckpointLayoutHook") == 1
    cfg, notes = prepare_config(str(DET / "sparse-rcnn_focalnet-t-lrf_fpn_300-proposals_crop-ms-480-800-3x_coco.py"))
    assert [h.type for h in cfg.custom_hooks] == ["DenseCheckpointLayoutHook"]  # listed by the config itself
    cfg, notes = prepare_config(str(CONFIGS / "seg" / "upernet_focalnet-t-lrf_8xb2-160k_ade20k-512x512.py"),
                                cfg_options=dict(custom_hooks=[]))  # a config that drops it: the runner adds it
    assert [h["type"] for h in cfg.custom_hooks] == ["DenseCheckpointLayoutHook"]
    assert any("DenseCheckpointLayoutHook" in n for n in notes)


@pytest.fixture
def mm_log():
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)
