# 1x (12 epochs) with the official EfficientViT-MSRA detection recipe (microsoft/Cream EfficientViT/downstream
# configs): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay on the attention biases
# (BatchNorm parameters ARE decayed there), no gradient clipping; linear warm-up 500 iterations from 0.001x,
# lr x0.1 after epochs 8 and 11 (mmdet's 1x steps). Batch 16 (8 GPUs x 2).
_base_ = './schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    paramwise_cfg=dict(_delete_=True, custom_keys={'attention_biases': dict(decay_mult=0.)}))
