# 3x (36 epochs) with the official RAVLT Mask R-CNN 3x recipe (qhfan/RALA detection/configs/RALA/maskrcnn_*_3x.py):
# the 1x recipe of ./schedule_1x_ravlt.py (AdamW lr 1e-4, wd 0.05, no decay on 'norm', 500 warm-up iterations),
# lr x0.1 after epochs 27 and 33.
_base_ = './schedule_1x_ravlt.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
