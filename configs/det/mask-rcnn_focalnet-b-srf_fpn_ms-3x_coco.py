# Mask R-CNN 3x, FocalNet-B (SRF) backbone, FPN, COCO 2017.
# Should reproduce the official FocalNet result (microsoft/FocalNet README, Mask R-CNN 3x, COCO val2017):
#   49.6 box AP / 44.1 mask AP  (focal kernels 9, 11).
# Official recipe (detection/configs/focalnet/mask_rcnn_focalnet_base_patch4_mstrain_480-800_adamw_3x_coco_srf.py):
# multi-scale + crop training (480-800), AdamW lr 1e-4 wd 0.05 (no decay on norms), 36 epochs with steps [27, 33], batch
# 16 (8 GPUs x 2; the official config sets 1 image per GPU), drop path 0.5, focal windows 9, per-output norms, apex fp16
# (use --amp on GPUs).
# Differs from the mmdet base (mask-rcnn_r50_fpn, single-scale 1x SGD): the FocalNet multi-scale + crop augmentation and
# the AdamW 3x schedule (project bases coco_instance_ms-crop / schedule_3x).
# Released detector: https://projects4jw.blob.core.windows.net/focalnet/release/detection/focalnet_base_srf_maskrcnn_3x.pth
#   (tools/test.py <this config> <that file> loads it strictly: backbones.mm.checkpoint converts the layout).
_base_ = [
    './_base_/models/mask-rcnn_focalnet_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout
# onto ours and zero-pads the focal kernels to the detection windows.
pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_base_srf.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_base_srf',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
