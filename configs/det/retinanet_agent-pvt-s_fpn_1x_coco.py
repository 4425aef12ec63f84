# RetinaNet 1x, Agent-PVT-S backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/detection/README.md, RetinaNet 1x, COCO val2017):
#   44.1 box AP (official config downstream/detection/configs/agent_pvt/agent_pvt_s_rtn_1x_12-16-28-28.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 1e-4 on every parameter,
# warm-up 500 it, 12 epochs with steps [8, 11], batch 2 per GPU, drop path 0.1, agent grids 12-16-28-28, no output norms.
# Released detector: https://cloud.tsinghua.edu.cn/f/d427a52511f64ab5a928/?dl=1 (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/retinanet_agent-pvt_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/schedule_1x_agent-pvt.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (TsinghuaCloud, timm tag agent_pvt_small.in1k); the checkpoint
# filter maps the official layout onto ours.
model = dict(
    backbone=dict(
        model_name='agent_pvt_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_pvt_small.in1k')),
    neck=dict(in_channels=[128, 320, 512]))
optim_wrapper = dict(optimizer=dict(lr=0.0001))  # the official RetinaNet configs
