# 1x (12 epochs) with the official Agent-PVT detection recipe (LeapLabTHU/Agent-Attention downstream/detection/configs/agent_pvt/,
# mmdet 2.x): AdamW lr 2e-4 (Mask R-CNN; RetinaNet configs set 1e-4), weight decay 1e-4 on every parameter, mmdet
# 2.x schedule_1x otherwise: linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 8 and 11, no gradient
# clipping. Batch 2 per GPU (mmdet's coco_instance base; 8 GPUs assumed, the README does not say).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, betas=(0.9, 0.999), weight_decay=0.0001))
