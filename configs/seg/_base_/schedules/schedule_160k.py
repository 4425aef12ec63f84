# 160k iterations with the AdamW recipe of the official FocalNet (and Swin) UPerNet configs:
# AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay for parameters whose name contains
# 'norm'; linear warm-up 1500 iterations from 1e-6x, then poly decay (power 1.0) to 0; batch 16.
# Validation and checkpoints every 16k iterations (mmseg's 160k base).
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
