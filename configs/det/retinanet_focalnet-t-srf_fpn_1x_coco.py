# RetinaNet 1x, FocalNet-T (SRF) backbone, FPN, COCO 2017 (boxes only).
# No published number: the FocalNet paper and repository report no RetinaNet result. The hyper-parameters are
# those of the official FocalNet-T Mask R-CNN 1x recipe (AdamW lr 1e-4 wd 0.05, steps [9, 11], drop path 0.1,
# focal windows 9, per-output norms) with mmdet's single-scale 1333x800 detection data pipeline.
_base_ = [
    './_base_/models/retinanet_focalnet_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/schedule_1x.py',
    './_base_/default_runtime.py',
]

pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_tiny_srf.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_tiny_srf',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
