# RetinaNet + FPN (mmdet's base) on a FocalNet of this repository: stages 1..3 only (stride 8/16/32; stage 0
# would be an unused output), FPN from its first input (start_level=0) with 5 levels, as mmdet's Swin RetinaNet.
# Focal windows 9 and per-output LayerNorms as in the official FocalNet detection code.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_srf',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.2,
        model_kwargs=dict(focal_windows=9)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))
