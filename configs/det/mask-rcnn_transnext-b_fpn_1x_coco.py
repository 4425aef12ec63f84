# Mask R-CNN 1x, TransNeXt-B backbone, FPN, COCO 2017.
# Should reproduce the official result (DaiShiResearch/TransNeXt README, Mask R-CNN 1x, COCO val2017):
#   51.7 box AP / 45.9 mask AP (109.2M params).
# Official recipe: single-scale 1333x800 training with flip, AdamW lr 1e-4 weight decay 0.05 (none on norms,
# query embeddings, local position biases, CPB MLPs and temperatures), warm-up 500 it, 12 epochs with steps
# [8, 11], batch 16 (8 GPUs x 2), drop path 0.7, fp16 (loss scale 512),
# position bias interpolated from an 800 x 800 reference.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/mask-rcnn_transnext_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/schedule_1x_transnext.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-base-224-1k/resolve/main/transnext_base_224_1k.pth'
model = dict(
    backbone=dict(
        model_name='transnext_base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
# The official Base run trained in fp16 with a static loss scale of 512 (mmdet 2 'fp16 = dict(loss_scale=512.)');
# the runner falls back to fp32 without a GPU.
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.)
