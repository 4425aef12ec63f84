# UPerNet, halonet50ts backbone (timm's HaloNet-ResNet50 hybrid), ADE20K, 512x512 crops, 160k iterations,
# batch 16 (4 GPUs x 4).
# No published number: the HaloNet paper reports no ADE20K result for this model (timm's hybrid is not one of
# the paper's models, and timm publishes ImageNet weights only).
# Hyper-parameters of mmseg's ResNet-50 UPerNet (upernet_r50_4xb4-160k_ade20k-512x512): SGD lr 0.01,
# momentum 0.9, weight decay 5e-4, poly decay (power 0.9) to 1e-4, SyncBN, auxiliary FCN head (loss weight 0.4).
_base_ = [
    './_base_/models/upernet_halonet.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='timm:halonet50ts.a1h_in1k')))
