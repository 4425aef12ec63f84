# 40k iterations with the Semantic-FPN recipe mmseg uses for PVT / PoolFormer backbones: AdamW lr 2e-4,
# weight decay 1e-4, poly decay (power 0.9) to 0, batch 32 (8 GPUs x 4). Validation and checkpoints every 4k
# iterations (mmseg's 40k base).
_base_ = 'mmseg::_base_/schedules/schedule_40k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.)}))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
