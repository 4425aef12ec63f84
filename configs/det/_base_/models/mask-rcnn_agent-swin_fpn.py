# Mask R-CNN + FPN on an Agent-Swin of this repository, as the official detection backbone (LeapLabTHU/Agent-Attention
# downstream/detection/mmdet/models/backbones/agent_swin.py, mmdet 2.x) builds it: all four stages, each output
# through a LayerNorm (the official norm0..3, nn.LayerNorm eps 1e-5), no classification head, the agent grids of
# the official configs (9x9, 12x12, 14x14, 7x7 as agent_shapes), no frozen stages.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

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
