# ADE20K (data/ade/ADEChallengeData2016): mmseg's base (random resize 0.5-2.0 of 2048x512, crop 512x512,
# reduce_zero_label), 2 images per GPU (x 8 GPUs = 16, as the official FocalNet / Swin UPerNet runs).
_base_ = 'mmseg::_base_/datasets/ade20k.py'

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
