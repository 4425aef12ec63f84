# Semantic FPN, LITv2-S backbone, ADE20K, 512x512 crops, 80k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official result (ziplab/LITv2 README, Semantic FPN 80k, ADE20K val, single scale):
#   44.3 mIoU (official config segmentation/configs/litv2/litv2_s_fpn_r50_512x512_80k_ade20k.py).
# Official recipe: AdamW lr 1e-4 weight decay 1e-4 on every parameter, poly (power 0.9) to 1e-6 without warm-up,
# drop path 0.2, per-output LayerNorms on all four stages, fp32; whole-image test at (2048, 512).
# At test sizes that are not multiples of 32 the token merging pads (ours) where the official code drops the odd
# last row / column, a small difference at the bottom / right border.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/fpn_litv2.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_80k_litv2.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='litv2_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
