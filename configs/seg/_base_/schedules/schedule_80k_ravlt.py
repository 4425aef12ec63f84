# 80k iterations with the official RAVLT Semantic-FPN recipe (qhfan/RALA segmentation/configs/RALA/RALA_FPN_*_1x.py,
# mmseg 0.x): AdamW lr 1e-4 (betas 0.9, 0.999), weight decay 1e-4 on every parameter, no gradient clipping, no
# warm-up, poly decay (power 0.9) to 1e-6 (the base schedule_80k's policy, kept by the RALA configs); batch 2 per
# GPU (16 = 8 x 2 assumed; the GPU count is not stated). Validation and checkpoints every 4k iterations, fp32.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=4000))
