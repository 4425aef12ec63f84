# Mask R-CNN 1x, FocalNet-T (LRF) backbone, FPN, COCO 2017.
# Should reproduce the official FocalNet result (microsoft/FocalNet README, Mask R-CNN 1x, COCO val2017):
#   46.1 box AP / 41.5 mask AP  (focal kernels 9, 11, 13).
# Official recipe: multi-scale + crop training (480-800), AdamW lr 1e-4 wd 0.05 (no decay on norms),
# 12 epochs with steps [9, 11], batch 16 (8 GPUs x 2), drop path 0.1, focal windows 9, per-output norms,
# apex fp16 (use --amp on GPUs). Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_focalnet_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_1x.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout
# onto ours and zero-pads the focal kernels to the detection windows.
pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_tiny_lrf.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_tiny_lrf',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
