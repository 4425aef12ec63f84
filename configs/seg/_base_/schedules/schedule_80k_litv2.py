# 80k iterations with the official LITv2 Semantic-FPN recipe (ziplab/LITv2 segmentation/configs, mmseg 0.13):
# AdamW lr 1e-4, betas (0.9, 0.999), weight decay 1e-4 on every parameter, no gradient clipping, no warm-up,
# poly decay (power 0.9) to 1e-6; batch 16 (8 GPUs x 2), fp32. Validation and checkpoints every 8k iterations.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
