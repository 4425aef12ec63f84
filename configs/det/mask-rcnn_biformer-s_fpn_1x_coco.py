# Mask R-CNN 1x, BiFormer-S backbone, FPN, COCO 2017.
# Should reproduce the official result (rayleizhu/BiFormer README, Mask R-CNN 1x, COCO val2017):
#   47.8 box AP / 43.2 mask AP (official config object_detection/configs/coco/maskrcnn.1x.biformer_small.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms),
# warm-up 500 it, 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), drop path 0.2, 16 x 16 routing regions,
# per-output LayerNorms, BatchNorms in eval mode, fp16 (use --amp on GPUs). No official detector weights exist.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_biformer_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_biformer.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release, downloaded to this path from
#   https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content
# (every OneDrive file is served as .../root/content, so an URL here would give T, S and B one cache file); the
# checkpoint filter maps the official layout onto ours.
pretrained = 'checkpoints/biformer_small_in1k.pth'
model = dict(
    backbone=dict(
        model_name='biformer_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
