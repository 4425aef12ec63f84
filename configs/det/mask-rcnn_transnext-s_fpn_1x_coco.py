# Mask R-CNN 1x, TransNeXt-S backbone, FPN, COCO 2017.
# Should reproduce the official result (DaiShiResearch/TransNeXt README, Mask R-CNN 1x, COCO val2017):
#   51.1 box AP / 45.5 mask AP (69.3M params).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms,
# query embeddings, local position biases, CPB MLPs and temperatures), warm-up 500 it, 12 epochs with steps
# [8, 11], batch 16 (8 GPUs x 2), drop path 0.6, fp32,
# position bias interpolated from an 800 x 800 reference.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_transnext_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_transnext.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-small-224-1k/resolve/main/transnext_small_224_1k.pth'
model = dict(
    backbone=dict(
        model_name='transnext_small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[72, 144, 288, 576]))
