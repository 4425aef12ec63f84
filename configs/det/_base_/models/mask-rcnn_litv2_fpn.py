# Mask R-CNN + FPN (mmdet's base RPN / RoI heads) on a LITv2 of this repository, as the official ziplab/LITv2
# detection code builds it: all four stages (strides 4..32), alpha 0.9, HiLo windows 2 in stage 3 and 1 (global
# attention) in stage 4, no frozen stages, the token-merging BatchNorms train normally (no norm_eval) and per GPU
# (no sync_bn): the official detection/mmdet/models/backbones/litv2.py builds plain nn.BatchNorm2d in its DTM,
# has no norm_eval, and nothing in the official code converts them to SyncBatchNorm.
# Output LayerNorms on stages 1..3 only (norm1..norm3; stage 0 passes raw), as the official detection backbone:
# an official detector checkpoint's backbone keys load one to one.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='litv2_small',
        out_indices=(0, 1, 2, 3),
        out_norms=(False, True, True, True),
        drop_path_rate=0.2,
        model_kwargs=dict(alpha=0.9, window_sizes=(0, 0, 2, 1))),
    neck=dict(in_channels=[96, 192, 384, 768]))
