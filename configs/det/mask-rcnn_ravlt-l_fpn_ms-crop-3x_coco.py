# Mask R-CNN 3x, RAVLT-L backbone, FPN, COCO 2017, multi-scale + random-crop training.
# Should reproduce the official result (qhfan/RALA README, Mask R-CNN 3x, COCO val2017):
#   53.6 box AP / 47.3 mask AP (official config detection/configs/RALA/maskrcnn_l_3x.py).
# Official recipe: the Swin multi-scale (480-800) + random-crop augmentation, AdamW lr 1e-4 weight decay 0.05 (none
# on norms), warm-up 500 it, 36 epochs with steps [27, 33], batch 2 per GPU, drop path 0.55, per-output LayerNorms,
# BatchNorms trained (SyncBN), fp16 (use --amp on GPUs). Released detector: https://huggingface.co/aldjalkdf/RAVLT/resolve/main/maskrcnn_l_3x_36_epoch.pth
# (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_ravlt_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x_ravlt.py',
    './_base_/default_runtime.py',
]

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'
model = dict(
    backbone=dict(
        model_name='ravlt_l',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 448, 640]))
