# Mask R-CNN 1x, TransNeXt-T backbone, FPN, COCO 2017.
# Should reproduce the official result (DaiShiResearch/TransNeXt README, Mask R-CNN 1x, COCO val2017):
#   49.9 box AP / 44.6 mask AP (47.9M params).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms,
# query embeddings, local position biases, CPB MLPs and temperatures), warm-up 500 it, 12 epochs with steps
# [8, 11], batch 16 (8 GPUs x 2), drop path 0.4, fp32,
# position bias interpolated from an 800 x 800 reference.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_transnext_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_transnext.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k/resolve/main/transnext_tiny_224_1k.pth'
model = dict(
    backbone=dict(
        model_name='transnext_tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[72, 144, 288, 576]))
