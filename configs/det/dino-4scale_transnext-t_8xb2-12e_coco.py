# DINO 4-scale, TransNeXt-T backbone, 12 epochs, COCO 2017 (boxes only).
# Should reproduce the official result (DaiShiResearch/TransNeXt detection/dino README, COCO val2017):
#   55.1 box AP (47.8M params).
# Official recipe (detection/dino/configs/dino-4scale_transnext_tiny-12e_coco.py on mmdet's
# dino-4scale_r50_8xb2-12e_coco): DETR multi-scale + crop augmentation (480-800), AdamW lr 1e-4 wd 0.05 (the r50
# base has 1e-4), backbone lr x0.1, no decay on biases / norms / 1-D parameters, gradient clipping 0.1, 12 epochs,
# lr x0.1 after epoch 11, batch 16 = 8 GPUs x 1 image x 2 accumulated steps, drop path 0.3, position bias
# interpolated from an 800 x 800 reference. The official config's fp16=dict(loss_scale=512.) is never read by
# its train.py (only --amp is); pass --amp on GPUs for mixed precision.
# Scales: stages 1..3 (strides 8/16/32) plus one extra stride-64 level from the channel mapper (the official backbone's
# `scales=4` returns stages i >= 1); mmdet's 4-scale base reads three ResNet stages, not these.
# Released detector: https://huggingface.co/DaiShiResearch/dino-4scale-transnext-tiny-coco/resolve/main/dino_4scale_transnext_tiny_12e_in1k.pth
#   (mmdet 3.0 layout; tools/test.py <this config> <that file> loads it strictly).
_base_ = './_base_/models/dino_transnext.py'

num_levels = 4
# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k/resolve/main/transnext_tiny_224_1k.pth'
model = dict(
    num_feature_levels=num_levels,
    backbone=dict(
        model_name='transnext_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[144, 288, 576], num_outs=num_levels),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=num_levels))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=num_levels))))
