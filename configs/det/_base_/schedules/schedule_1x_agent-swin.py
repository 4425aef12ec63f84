# 1x (12 epochs) with the official Agent-Swin detection recipe (LeapLabTHU/Agent-Attention downstream/detection/configs/agent_swin/,
# mmdet 2.x): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, none on norms, relative position tables and the
# six agent bias tables; linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, no gradient
# clipping. Batch 2 per GPU (8 GPUs assumed, the README does not say).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'an_bias': dict(decay_mult=0.),
            'na_bias': dict(decay_mult=0.),
            'ah_bias': dict(decay_mult=0.),
            'aw_bias': dict(decay_mult=0.),
            'ha_bias': dict(decay_mult=0.),
            'wa_bias': dict(decay_mult=0.),
        }))
