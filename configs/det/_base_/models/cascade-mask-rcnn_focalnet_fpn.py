# Cascade Mask R-CNN + FPN (mmdet's base RPN, three cascade stages, mask head) on a FocalNet of this repository,
# as the official FocalNet cascade configs build it: per-output LayerNorms on all four stages, and each cascade
# stage a ConvFCBBoxHead with 4 shared convs (SyncBN) + 1 fc, boxes regressed as decoded boxes with a GIoU loss
# (weight 10): the Swin "giou_4conv1f" heads, where mmdet's base has Shared2FC heads with smooth L1.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)


def _stage(stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_lrf',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(11, 9, 9, 7))),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(bbox_head=[
        _stage([0.1, 0.1, 0.2, 0.2]),
        _stage([0.05, 0.05, 0.1, 0.1]),
        _stage([0.033, 0.033, 0.067, 0.067]),
    ]))
