# UPerNet, BiFormer-S backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official result (rayleizhu/BiFormer README, UPerNet 160k, ADE20K val):
#   49.8 mIoU single-scale / 50.8 mIoU multi-scale + flip (multi-scale + flip: tools/test.py --tta)
#   (official config semantic_segmentation/configs/ade20k/upernet.biformer_small.py).
# Official recipe: AdamW lr 6e-5 weight decay 0.01 (none on norms), linear warm-up 1500 it (1e-6x) + poly
# (power 1), drop path 0.3, 8 x 8 routing regions, per-output LayerNorms, synchronised BatchNorms, auxiliary FCN
# head on stage 2 (loss weight 0.4), fp16 (--amp on GPUs); whole-image test at (2048, 512).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/upernet_biformer.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_biformer.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k classification weights of the official release, downloaded to this path from
#   https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content
# (OneDrive serves every file as .../root/content: an URL here would give T, S and B one cache file).
pretrained = 'checkpoints/biformer_small_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
