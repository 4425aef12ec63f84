# Cascade Mask R-CNN 1x, Agent-Swin-T backbone, FPN, COCO 2017, multi-scale + random-crop training.
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/detection/README.md, Cascade Mask R-CNN 1x, COCO val2017):
#   49.2 box AP / 42.7 mask AP (official config downstream/detection/configs/agent_swin/agent_swin_t_crcnn_1x_9-12-14-7.py).
# Official recipe: the Swin multi-scale (480-800) + random-crop augmentation (also for 1x), AdamW lr 1e-4 weight decay
# 0.05 (none on norms, position and agent bias tables), warm-up 500 it, 12 epochs with steps [8, 11], batch 2 per GPU, drop path 0.1,
# agent grids 9-12-14-7, per-output LayerNorms. Released detector: https://cloud.tsinghua.edu.cn/f/39d78fddf90241e58db0/?dl=1
# (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/cascade-mask-rcnn_agent-swin_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_1x_agent-swin.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (TsinghuaCloud, timm tag agent_swin_tiny.in1k).
model = dict(
    backbone=dict(
        model_name='agent_swin_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_swin_tiny.in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
