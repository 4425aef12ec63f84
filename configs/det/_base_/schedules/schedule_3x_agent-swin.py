# 3x (36 epochs) with the recipe of ./schedule_1x_agent-swin.py; lr x0.1 after epochs 27 and 33 (the official
# Agent-Swin 3x configs).
_base_ = './schedule_1x_agent-swin.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
