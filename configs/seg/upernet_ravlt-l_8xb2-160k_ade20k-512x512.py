# UPerNet, RAVLT-L backbone, ADE20K, 512x512 crops, 160k iterations ("2x"), batch 16 (8 GPUs x 2 assumed).
# Should reproduce the official result (qhfan/RALA README, UperNet 2x, ADE20K val, single scale):
#   53.2 mIoU (official config segmentation/configs/RALA/RALA_Uper_l_2x.py).
# Official recipe: AdamW lr 6e-5 weight decay 0.01 (none on norms), linear warm-up 1500 it + poly (power 1) to 0,
# drop path 0.55, per-output LayerNorms on all four stages, BatchNorms trained (SyncBN), auxiliary FCN head on stage 3,
# fp16 (use --amp on GPUs); whole-image test at (2048, 512). Released segmentor:
# https://huggingface.co/aldjalkdf/RAVLT/resolve/main/uper_l_2x.pth (mmseg 0.x keys; loads
# strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/upernet_ravlt.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_ravlt.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='ravlt_l',
        drop_path_rate=0.55,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
