# 3x (36 epochs) with the official DaViT 3x recipe (dingmyu/davit mmdet/configs/davit_{maskrcnn,retinanet}_3x_coco.py
# on mmdet 2.x's schedule_1x): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 on every parameter, no
# gradient clipping; linear warm-up 500 iterations from 0.001x, lr x0.1 after epochs 27 and 33. Batch 16.
_base_ = './schedule_1x_davit.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
