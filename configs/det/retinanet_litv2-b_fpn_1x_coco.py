# RetinaNet 1x, LITv2-B backbone (HiLo windows 2), FPN, COCO 2017 (boxes only).
# Should reproduce the official result (ziplab/LITv2 README, RetinaNet 1x, COCO val2017): 46.7 box AP
#   (official config detection/configs/litv2/retinanet_litv2_b_fpn_1x_coco.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 1e-4 on every parameter
# (the official paramwise_cfg {'norm': decay_mult 0} is not under custom_keys, so mmcv ignores it), warm-up 500
# it, 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), drop path 0.3, gradient checkpointing,
# apex fp16 (use --amp on GPUs).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/retinanet_litv2_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/schedule_1x_litv2.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_b.pth'
model = dict(
    backbone=dict(
        model_name='litv2_base',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=0.0001), paramwise_cfg=dict(_delete_=True))
