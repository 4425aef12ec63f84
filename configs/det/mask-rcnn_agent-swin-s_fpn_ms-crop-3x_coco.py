# Mask R-CNN 3x, Agent-Swin-S backbone, FPN, COCO 2017, multi-scale + random-crop training.
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/detection/README.md, Mask R-CNN 3x, COCO val2017):
#   48.9 box AP / 43.8 mask AP (official config downstream/detection/configs/agent_swin/agent_swin_s_mrcnn_3x_9-12-14-7.py).
# Official recipe: the Swin multi-scale (480-800) + random-crop augmentation (also for 1x), AdamW lr 1e-4 weight decay
# 0.05 (none on norms, position and agent bias tables), warm-up 500 it, 36 epochs with steps [27, 33], batch 2 per GPU, drop path 0.1,
# agent grids 9-12-14-7, per-output LayerNorms. Released detector: https://cloud.tsinghua.edu.cn/f/b78f6ff837b84b61b122/?dl=1
# (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_agent-swin_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x_agent-swin.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (TsinghuaCloud, timm tag agent_swin_small.in1k).
model = dict(
    backbone=dict(
        model_name='agent_swin_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_swin_small.in1k')),
    neck=dict(in_channels=[96, 192, 384, 768]))
