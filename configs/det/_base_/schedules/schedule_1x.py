# 1x (12 epochs) with the AdamW recipe of the official FocalNet (and Swin) detection configs:
# AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay for parameters whose name contains
# 'norm' (and position / relative-position tables, which FocalNet has none of); linear warm-up 500 iterations
# from 0.001x; lr x0.1 after epochs 9 and 11 -- the official FocalNet configs use step [9, 11], not mmdet's [8, 11].
# Batch 16 (8 GPUs x 2). The official runs used apex fp16 (use_fp16=True): pass --amp to match on GPUs.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
