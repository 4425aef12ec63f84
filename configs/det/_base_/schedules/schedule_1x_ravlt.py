# 1x (12 epochs) with the official RAVLT Mask R-CNN recipe (qhfan/RALA detection/configs/RALA/maskrcnn_*_1x.py,
# mmdet 2.x): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay for parameters whose name
# contains 'norm' (absolute_pos_embed / relative_position_bias_table are listed there too; RAVLT has none);
# linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11 (mmdet 2.x schedule_1x), no gradient
# clipping. Batch 2 per GPU (the GPU count is not stated; 16 = 8 x 2 assumed, as mmdet's 1x). The official stem
# BatchNorms (patch_embed.proj.1/4/7/10) have no 'norm' in their names and were decayed; ours are stem.norm*,
# hence the longer key restoring decay (mmengine applies the longest matching key). The official downsample
# BatchNorms (layers.i.downsample.norm) were not decayed, nor are ours. fp16 in the official runs: --amp on GPUs.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'stem.norm': dict(decay_mult=1.),
        }))
