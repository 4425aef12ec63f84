# ATSS + FPN on a FocalNet of this repository, as the official FocalNet ATSS config builds it (itself mmdet's
# atss_r50_fpn model): stages 1..3 (strides 8/16/32) with per-output LayerNorms, FPN from its first input with
# two extra levels on the FPN outputs ('on_output', strides 64/128), ATSSHead (4 stacked convs, one anchor of
# octave scale 8 per location, focal loss, GIoU loss weight 2, centerness), ATSS assigner top-9, NMS 0.6.
# mmdet ships ATSS only as a full config (atss_r50_fpn_1x_coco), so the head is written on top of the RetinaNet
# model base, whose anchor head / FPN it shares.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    type='ATSS',
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_lrf',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(11, 9, 9, 7))),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_output', num_outs=5),
    bbox_head=dict(
        _delete_=True,
        type='ATSSHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(
        _delete_=True, assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(
        _delete_=True, nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
        max_per_img=100))
