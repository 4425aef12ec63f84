# Mask R-CNN 1x, halonet50ts backbone (timm's HaloNet-ResNet50 hybrid), FPN, COCO 2017.
# No published number: the HaloNet paper reports no COCO result for this model (timm's hybrid is not one of
# the paper's models, and timm publishes ImageNet weights only).
# Hyper-parameters of mmdet's ResNet-50 Mask R-CNN 1x (mask-rcnn_r50_fpn_1x_coco): SGD lr 0.02, momentum 0.9,
# weight decay 1e-4, linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, 12 epochs,
# batch 16 (8 GPUs x 2), single-scale 1333x800 + flip, BN statistics frozen.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_halonet_fpn.py',
    './_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    './_base_/default_runtime.py',
]

# timm's ImageNet-1k weights (halonet50ts.a1h_in1k, 81.6 top-1 at 256), loaded as they are: same keys.
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='timm:halonet50ts.a1h_in1k')))
