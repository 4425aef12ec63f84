# Mask R-CNN + FPN (mmdet's base RPN / RoI heads) on a RAVLT of this repository, as the official qhfan/RALA detection
# backbone (GLTA in detection/mmdet/models/backbones/RALA.py, mmdet 2.x) builds it: all four stages (strides
# 4..32), each output through a LayerNorm (eps 1e-6, the official extra_norms), no classification head (the
# 1024-channel conv head is not used), the stem / downsample BatchNorms trained and synchronised across GPUs (the
# official backbone builds them as nn.SyncBatchNorm; its norm_eval=True default only reaches nn.BatchNorm2d
# modules, which SyncBatchNorm is not, so they trained: norm_eval=False, sync_bn='torch'), no frozen stages.
# RoPE tables are built from each feature map's size, so every input size runs with the ImageNet weights as they are.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

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
