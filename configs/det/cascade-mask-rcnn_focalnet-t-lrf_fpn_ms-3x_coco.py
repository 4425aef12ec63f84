# Cascade Mask R-CNN 3x, FocalNet-T (LRF) backbone, FPN, COCO 2017.
# Should reproduce the official FocalNet result (microsoft/FocalNet README, Cascade Mask R-CNN 3x, COCO val2017):
#   51.5 box AP  (focal windows [11, 9, 9, 7], kernels from 11/9/9/7 per stage).
# Official recipe
# (detection/configs/focalnet/cascade_mask_rcnn_focalnet_tiny_patch4_mstrain_480-800_adamw_3x_coco_lrf.py): multi-scale
# + crop training (480-800), AdamW lr 1e-4 wd 0.05 (no decay on norms), 36 epochs with steps [27, 33], batch 16 (8 GPUs
# x 2; the official config sets 1 image per GPU), drop path 0.3, focal windows [11, 9, 9, 7], per-output norms, 4conv1fc
# GIoU cascade heads with SyncBN, apex fp16 (use --amp on GPUs).
# Differs from the mmdet base (cascade-mask-rcnn_r50_fpn): 4conv1fc GIoU bbox heads, multi-scale + crop, AdamW 3x.
# Released detector: https://projects4jw.blob.core.windows.net/focalnet/release/detection/focalnet_tiny_lrf_cascade_maskrcnn_3x.pth
_base_ = [
    './_base_/models/cascade-mask-rcnn_focalnet_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout
# onto ours and zero-pads the focal kernels (3/5/7) to the detection windows.
pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_tiny_lrf.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_tiny_lrf',
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(11, 9, 9, 7)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
