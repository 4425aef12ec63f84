# Mask R-CNN + FPN (mmdet's base) on a FocalNet of this repository, as the official FocalNet detection code
# builds it: focal windows 9 at every stage (classification kernels 3/5 are zero-padded to 9/11 by the
# checkpoint filter), a LayerNorm on each of the four outputs (norm0..norm3), no frozen stages.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_srf',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.2,
        model_kwargs=dict(focal_windows=9)),
    neck=dict(in_channels=[96, 192, 384, 768]))
