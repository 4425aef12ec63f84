# RetinaNet 1x, DaViT-T backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official DaViT result (dingmyu/davit README, RetinaNet 1x, COCO val2017):
#   44.0 box AP  (38.5M params, 244G FLOPs).
# Official recipe (dingmyu/davit mmdet/configs/davit_retinanet_1x_coco.py): multi-scale + crop training
# (480-800), AdamW lr 1e-4 wd 0.05 on all parameters, 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2),
# drop path 0.1, window 7, FPN on stages 1..3 with extra levels on the input, per-output norms.
_base_ = [
    './_base_/models/retinanet_davit_fpn.py',
    './_base_/datasets/coco_detection_ms-crop.py',
    './_base_/schedules/schedule_1x_davit.py',
    './_base_/default_runtime.py',
]

pretrained = 'timm:davit_tiny.msft_in1k'
model = dict(
    backbone=dict(
        model_name='davit_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
