# 160k iterations with the official Agent-Swin UPerNet recipe (LeapLabTHU/Agent-Attention downstream/segmentation/configs/agent_swin/,
# mmseg 0.x): ./schedule_160k.py (AdamW lr 6e-5, weight decay 0.01, linear warm-up 1500 it from 1e-6x, poly power 1)
# with no weight decay on norms, relative position tables and the six agent bias tables as well.
_base_ = './schedule_160k.py'

optim_wrapper = dict(
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
