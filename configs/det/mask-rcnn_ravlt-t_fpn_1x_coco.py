# Mask R-CNN 1x, RAVLT-T backbone, FPN, COCO 2017.
# Should reproduce the official result (qhfan/RALA README, Mask R-CNN 1x, COCO val2017):
#   47.3 box AP / 42.7 mask AP (official config detection/configs/RALA/maskrcnn_t_1x.py).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms),
# warm-up 500 it, 12 epochs with steps [8, 11], batch 2 per GPU, drop path 0.1, per-output LayerNorms, BatchNorms
# trained (SyncBN), fp16 (use --amp on GPUs). Released detector: https://huggingface.co/aldjalkdf/RAVLT/resolve/main/maskrcnn_t_1x_12_epoch.pth
# (mmdet 2.x keys; loads strictly, see docs/openmmlab.md).
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_ravlt_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_ravlt.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release (hub aldjalkdf/RAVLT); the checkpoint filter maps the
# official layout onto ours.
pretrained = 'https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth'
model = dict(
    backbone=dict(
        model_name='ravlt_t',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
