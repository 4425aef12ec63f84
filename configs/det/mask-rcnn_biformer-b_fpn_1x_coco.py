# Mask R-CNN 1x, BiFormer-B backbone, FPN, COCO 2017.
# Should reproduce the official result (rayleizhu/BiFormer README, Mask R-CNN 1x, COCO val2017):
#   48.6 box AP / 43.7 mask AP (official config object_detection/configs/coco/maskrcnn.1x.biformer_base.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms),
# warm-up 500 it, 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), drop path 0.3, 16 x 16 routing regions,
# per-output LayerNorms, BatchNorms in eval mode, fp16 (use --amp on GPUs). No official detector weights exist.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_biformer_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_biformer.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release, downloaded to this path from
#   https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content
# (every OneDrive file is served as .../root/content, so an URL here would give T, S and B one cache file); the
# checkpoint filter maps the official layout onto ours.
pretrained = 'checkpoints/biformer_base_in1k.pth'
model = dict(
    backbone=dict(
        model_name='biformer_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
