# Cascade Mask R-CNN + FPN on a RAVLT of this repository: the Swin "giou_4conv1f" cascade heads of
# ./cascade-mask-rcnn_focalnet_fpn.py (4 shared convs with SyncBN + 1 fc per stage, GIoU loss weight 10), as the
# official RAVLT cascade model (qhfan/RALA detection/configs/_base_/models/RALA_cas_rcnn.py); backbone as
# ./mask-rcnn_ravlt_fpn.py (all four stages, per-output LayerNorms eps 1e-6, SyncBN
# stem / downsample BatchNorms).
_base_ = './cascade-mask-rcnn_focalnet_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='ravlt_s',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=False,
        drop_path_rate=0.15),
    neck=dict(in_channels=[64, 128, 320, 512]))
sync_bn = 'torch'
