# 1x (12 epochs) with the official TransNeXt Mask R-CNN recipe (DaiShiResearch/TransNeXt
# detection/maskrcnn/configs/mask_rcnn_transnext_*_fpn_1x_coco.py, mmdet 2.28): AdamW lr 1e-4, betas
# (0.9, 0.999), weight decay 0.05, no weight decay for parameters whose name contains query_embedding,
# relative_pos_bias_local, cpb, temperature or norm (other biases and the learnable tokens are decayed, as there);
# no gradient clipping; linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11 (mmdet's 1x).
# Batch 16 (8 GPUs x 2).
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
            'query_embedding': dict(decay_mult=0.),
            'relative_pos_bias_local': dict(decay_mult=0.),
            'cpb': dict(decay_mult=0.),
            'temperature': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
