# 1x (12 epochs) with the official LITv2 Mask R-CNN recipe (ziplab/LITv2 detection/configs/litv2/mask_rcnn_*,
# as trained with its mmdet 2.x code): AdamW lr 2e-4, betas (0.9, 0.999), weight decay 1e-4, no weight decay
# for parameters whose name contains 'norm'; linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8
# and 11 (mmdet's 1x). Batch 16 (8 GPUs x 2). The official runs used apex fp16 (use_fp16=True): pass --amp on
# GPUs. (The mmdet 3.x configs at ziplab/LITv2 HEAD still set the 2.x keys optimizer / lr_config, which mmengine
# ignores; these values are the ones of the runs behind the published numbers.)
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
