# RetinaNet 1x, EfficientViT-M4 backbone, EfficientViTFPN, COCO 2017 (boxes only).
# Should reproduce the official result (microsoft/Cream EfficientViT/downstream README, RetinaNet 1x,
# COCO val2017): 32.7 box AP (AP50 52.2, AP75 34.1).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 wd 0.05 (no decay on attention
# biases), 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), BatchNorm frozen, ImageNet-1k initialisation.
# One known difference: the stage-3 attention biases of the ImageNet checkpoint (4x4 window at 224) are resized
# to 7x7 bicubically with antialiasing (timm's rule); the official code interpolates without antialiasing.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/retinanet_efficientvit_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/schedule_1x_efficientvit.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (Cream layout; the checkpoint filter maps it).
pretrained = 'https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/efficientvit_m4.pth'
model = dict(backbone=dict(model_name='efficientvit_m4', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
