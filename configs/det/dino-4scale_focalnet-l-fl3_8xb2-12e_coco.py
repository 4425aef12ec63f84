# DINO 4-scale, FocalNet-L (3 focal levels, LRF, ImageNet-22k 384), 12 epochs, COCO 2017 (boxes only).
# Should reproduce the detrex result (IDEA-Research/detrex projects/dino README, COCO val2017):
#   57.5 box AP.
# Official recipe (detrex projects/dino/configs/dino-focal/dino_focalnet_large_lrf_384_4scale_12ep.py): DETR multi-scale
# + crop augmentation (480-800), AdamW lr 1e-4 wd 1e-4, backbone lr x0.1, gradient clipping 0.1, batch 16, 12 epochs, lr
# x0.1 after epoch 11 (detrex's 12ep schedule: 90k iterations at batch 16, decay at 82.5k), no warm-up, drop path 0.3,
# focal windows 5 (kernels 5/7/9), stages 1..3 + one extra level, 900 queries, 100 denoising queries.
# Differs from mmdet's DINO base: FocalNet-L stages 1..3 and detrex's position encoding (see the base).
# Released detector (detrex / detectron2 layout): https://github.com/IDEA-Research/detrex-storage/releases/download/v0.2.1/dino_focal_large_lrf_384_4scale_12ep.pth
#   tools/test.py <this config> <that file> converts it to mmdet's DINO names (backbones.mm.checkpoint).
_base_ = './_base_/models/dino_focalnet.py'

# ImageNet-22k (384) classification weights of the official FocalNet release.
pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_large_lrf_384.pth'
model = dict(
    backbone=dict(
        model_name='focalnet_large_fl3',
        out_indices=(1, 2, 3),
        model_kwargs=dict(focal_windows=5),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 768, 1536], num_outs=4))
