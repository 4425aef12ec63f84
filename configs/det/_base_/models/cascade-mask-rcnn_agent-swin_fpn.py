# Cascade Mask R-CNN + FPN on an Agent-Swin of this repository: the Swin "giou_4conv1f" cascade heads of
# ./cascade-mask-rcnn_focalnet_fpn.py (4 shared convs with SyncBN + 1 fc per stage, GIoU loss weight 10), as the
# official Agent-Swin cascade configs (LeapLabTHU/Agent-Attention downstream/detection/configs/agent_swin/*_crcnn_*.py); backbone as
# ./mask-rcnn_agent-swin_fpn.py (per-output LayerNorms, the official agent grids).
_base_ = './cascade-mask-rcnn_focalnet_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='agent_swin_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
    neck=dict(in_channels=[96, 192, 384, 768]))
