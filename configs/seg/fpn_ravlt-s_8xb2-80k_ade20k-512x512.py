# Semantic FPN, RAVLT-S backbone, ADE20K, 512x512 crops, 80k iterations, batch 16 (8 GPUs x 2 assumed).
# Should reproduce the official result (qhfan/RALA README, Semantic FPN 1x, ADE20K val, single scale):
#   49.5 mIoU (official config segmentation/configs/RALA/RALA_FPN_s_1x.py).
# Official recipe: AdamW lr 1e-4 weight decay 1e-4 on every parameter, poly (power 0.9) to 1e-6 without warm-up,
# drop path 0.15, per-output LayerNorms on all four stages, BatchNorms trained (SyncBN), fp32; whole-image test at
# (2048, 512). Released segmentor: https://huggingface.co/aldjalkdf/RAVLT/resolve/main/fpn_s_1x.pth (mmseg 0.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/fpn_ravlt.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_80k_ravlt.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='ravlt_s',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
