# Mask R-CNN 1x, Agent-PVT-S backbone, FPN, COCO 2017.
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/detection/README.md, Mask R-CNN 1x, COCO val2017):
#   44.5 box AP / 41.2 mask AP (official config downstream/detection/configs/agent_pvt/agent_pvt_s_mrcnn_1x_12-16-28-28.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 2e-4 weight decay 1e-4 on every parameter,
# warm-up 500 it, 12 epochs with steps [8, 11], batch 2 per GPU, drop path 0.2, agent grids 12-16-28-28, no output norms.
# Released detector: https://cloud.tsinghua.edu.cn/f/8e333aa6b55e45d4b76c/?dl=1 (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_agent-pvt_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_agent-pvt.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (TsinghuaCloud, timm tag agent_pvt_small.in1k); the checkpoint
# filter maps the official layout onto ours.
model = dict(
    backbone=dict(
        model_name='agent_pvt_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_pvt_small.in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))
