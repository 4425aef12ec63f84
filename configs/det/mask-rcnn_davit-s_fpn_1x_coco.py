# Mask R-CNN 1x, DaViT-S backbone, FPN, COCO 2017.
# Should reproduce the official DaViT result (dingmyu/davit README, Mask R-CNN 1x, COCO val2017):
#   47.7 box AP / 42.9 mask AP  (69.2M params, 351G FLOPs).
# Official recipe (dingmyu/davit mmdet/configs/davit_maskrcnn_1x_coco.py): multi-scale + crop training (480-800),
# AdamW lr 1e-4 wd 0.05 on all parameters, 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), drop path 0.1,
# window 7, per-output norms.
# The official repository ships the DaViT-T config only (S/B by changing the architecture); drop path 0.1 is
# kept from it as no S/B value is published.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_davit_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_1x_davit.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_small.msft_in1k'
model = dict(
    backbone=dict(
        model_name='davit_small',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
