# UPerNet, FocalNet-B (LRF) backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official FocalNet result (microsoft/FocalNet README, UPerNet 160k, ADE20K val):
#   50.5 mIoU single-scale / 51.4 mIoU multi-scale (multi-scale + flip: tools/test.py --tta).
# Official recipe (segmentation/configs/focalnet/upernet_focalnet_base_patch4_512x512_160k_ade20k_lrf.py):
# AdamW lr 6e-5 wd 0.01 (no decay on norms), linear warm-up 1500 it (1e-6x) + poly (power 1), drop path 0.3,
# focal windows 9 (kernels 9, 11, 13), per-output norms, auxiliary FCN head on stage 2 (loss weight 0.4).
# Released segmentor: https://projects4jw.blob.core.windows.net/focalnet/release/segmentation/focalnet_base_lrf_upernet_160k.pth
_base_ = [
    './_base_/models/upernet_focalnet.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout
# onto ours and zero-pads the focal kernels to the segmentation windows.
pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_base_lrf.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='focalnet_base_lrf',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
