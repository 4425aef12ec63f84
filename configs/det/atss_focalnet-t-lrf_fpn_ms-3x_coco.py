# ATSS 3x, FocalNet-T (LRF) backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official FocalNet result (microsoft/FocalNet README, ATSS 3x, COCO val2017):
#   49.6 box AP  (focal windows [11, 9, 9, 7]).
# Official recipe (detection/configs/focalnet/atss_focalnet_tiny_patch4_fpn_3x_coco_lrf.py): multi-scale + crop training
# (480-800), AdamW lr 1e-4 wd 0.05 (no decay on norms), 36 epochs with steps [27, 33], batch 16 (8 GPUs x 2), drop path
# 0.3, focal windows [11, 9, 9, 7], stages 1..3 with per-output norms, apex fp16 (--amp).
# Differs from mmdet's atss_r50_fpn_1x_coco: multi-scale + crop augmentation and AdamW 3x instead of SGD 1x.
# Released detector: https://projects4jw.blob.core.windows.net/focalnet/release/detection/focalnet_tiny_lrf_atss_3x.pth
_base_ = [
    './_base_/models/atss_focalnet_fpn.py',
    './_base_/datasets/coco_detection_ms-crop.py',
    './_base_/schedules/schedule_3x.py',
    './_base_/default_runtime.py',
]

pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_tiny_lrf.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_tiny_lrf',
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(11, 9, 9, 7)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
