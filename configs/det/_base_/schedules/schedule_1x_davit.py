# 1x (12 epochs) with the official DaViT detection recipe (dingmyu/davit mmdet/configs/davit_*_1x_coco.py on
# mmdet 2.x's schedule_1x): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 on every parameter (the official
# configs set no paramwise_cfg, unlike Swin / FocalNet), no gradient clipping; linear warm-up 500 iterations from
# 0.001x, lr x0.1 after epochs 8 and 11. Batch 16 (8 GPUs x 2). No fp16 in the official runs.
_base_ = './schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
