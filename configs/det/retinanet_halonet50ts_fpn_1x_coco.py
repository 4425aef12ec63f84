# RetinaNet 1x, halonet50ts backbone (timm's HaloNet-ResNet50 hybrid), FPN, COCO 2017 (boxes only).
# No published number: the HaloNet paper reports no COCO result for this model (timm's hybrid is not one of
# the paper's models, and timm publishes ImageNet weights only).
# Hyper-parameters of mmdet's ResNet-50 RetinaNet 1x (retinanet_r50_fpn_1x_coco): SGD lr 0.01, momentum 0.9,
# weight decay 1e-4, linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, 12 epochs,
# batch 16 (8 GPUs x 2), single-scale 1333x800 + flip, BN statistics frozen.
_base_ = [
    './_base_/models/retinanet_halonet_fpn.py',
    './_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    './_base_/default_runtime.py',
]

model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='timm:halonet50ts.a1h_in1k')))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
