# RetinaNet 1x, RAVLT-S backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official result (qhfan/RALA README, RetinaNet 1x, COCO val2017):
#   48.3 box AP (official config detection/configs/RALA/retinanet_s_1x.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 1e-4 on every parameter,
# no gradient clipping, warm-up 500 it, 12 epochs with steps [8, 11], batch 2 per GPU, drop path 0.15, per-output
# LayerNorms, BatchNorms trained (SyncBN), fp16 with loss scale 512 (use --amp on GPUs). Released detector:
# https://huggingface.co/aldjalkdf/RAVLT/resolve/main/retinanet_s_1x_12_epoch.pth (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config>
_base_ = [
    './_base_/models/retinanet_ravlt_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/schedule_1x_ravlt.py',
    './_base_/default_runtime.py',
]

pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth'
model = dict(
    backbone=dict(
        model_name='ravlt_s',
        drop_path_rate=0.15,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512]))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0001), paramwise_cfg=dict(_delete_=True))
