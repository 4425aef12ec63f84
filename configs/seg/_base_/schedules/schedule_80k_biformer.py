# 80k iterations with the official BiFormer Semantic-FPN recipe (rayleizhu/BiFormer semantic_segmentation/configs,
# mmseg 0.x, UniFormer's with lr x2 and iterations / 2 for 8 GPUs): AdamW lr 2e-4, betas (0.9, 0.999), weight
# decay 1e-4 on every parameter, no gradient clipping; linear warm-up over 1000 iterations from 0.1x, cosine
# annealing over all 80k iterations down to 1e-8x. Batch 32 (8 GPUs x 4). Validation and checkpoints every 4k
# iterations. The official runs used fp16 (loss scale 512; its comment: fp32 if the loss turns NaN): --amp on GPUs.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=80000, eta_min_ratio=1e-8, by_epoch=False, begin=0, end=80000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))
