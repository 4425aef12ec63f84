# Semantic FPN, BiFormer-B backbone, ADE20K, 512x512 crops, 80k iterations, batch 32 (8 GPUs x 4).
# Should reproduce the official result (rayleizhu/BiFormer README, Semantic FPN 80k, ADE20K val, single scale):
#   49.9 mIoU (official config semantic_segmentation/configs/ade20k/sfpn.biformer_base.py).
# Official recipe: AdamW lr 2e-4 weight decay 1e-4 on every parameter, linear warm-up 1000 it from 0.1x + cosine
# to 1e-8x, drop path 0.3, 8 x 8 routing regions, per-output LayerNorms, synchronised BatchNorms, fp16 (--amp on
# GPUs); whole-image test at (2048, 512). One difference: the official test resize (AlignResize) also rounds the
# resized image to a multiple of 32; mmseg's Resize here does not (the backbone pads internally).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/fpn_biformer.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_80k_biformer.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
train_dataloader = dict(batch_size=4)
# ImageNet-1k classification weights of the official release, downloaded to this path from
#   https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content
# (OneDrive serves every file as .../root/content: an URL here would give T, S and B one cache file).
pretrained = 'checkpoints/biformer_base_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='biformer_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
