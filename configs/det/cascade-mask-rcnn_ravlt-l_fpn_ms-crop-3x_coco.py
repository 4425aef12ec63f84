# Cascade Mask R-CNN 3x, RAVLT-L backbone, FPN, COCO 2017, multi-scale + random-crop training.
# Should reproduce the official result (qhfan/RALA README, Cascade Mask R-CNN 3x, COCO val2017):
#   55.6 box AP / 48.0 mask AP (official config detection/configs/RALA/casrcnn_l_3x.py).
# Official recipe: the Swin multi-scale (480-800) + random-crop augmentation, Swin 4conv1fc GIoU cascade heads,
# AdamW lr 1e-4 weight decay 0.05 (none on any norm layer: norm_decay_mult 0), warm-up 500 it, 36 epochs with steps
# [27, 33], batch 2 per GPU, drop path 0.55, per-output LayerNorms, BatchNorms trained (SyncBN), fp16 (use --amp on GPUs).
# Released detector: https://huggingface.co/aldjalkdf/RAVLT/resolve/main/Casmaskrcnn_l_3x_36_epoch.pth (mmdet 2.x keys;
# loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/cascade-mask-rcnn_ravlt_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x_ravlt-cascade.py',
    './_base_/default_runtime.py',
]

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'
model = dict(
    backbone=dict(
        model_name='ravlt_l',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
