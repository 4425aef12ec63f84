# 1x (12 epochs) with the official BiFormer Mask R-CNN recipe (rayleizhu/BiFormer object_detection/configs/coco,
# mmdet 2.x, itself UniFormer's): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, no weight decay for
# parameters whose name contains 'norm' (and absolute_pos_embed / relative_position_bias_table, which BiFormer
# has none of); linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11 (mmdet's 1x).
# Batch 16 (8 GPUs x 2). The official BatchNorm parameter names (downsample_layers.*) contain no 'norm', so they
# were decayed; ours are named stem.norm* / downsample.norm, hence the two longer keys restoring decay (mmengine
# applies the longest matching key). The official runs used fp16 (static loss scale 512): pass --amp on GPUs.
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
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'stem.norm': dict(decay_mult=1.),
            'downsample.norm': dict(decay_mult=1.),
        }))
