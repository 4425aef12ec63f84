# Mask R-CNN + FPN (mmdet's base) on a DaViT of this repository, as the official DaViT detection code
# (dingmyu/davit mmdet/) builds it: all four stages (strides 4..32), a LayerNorm on each output (norm0..norm3),
# window 7, no frozen stages. DaViT pads any input itself (every stride rounds up), so no size constraints.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='davit_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1),
    neck=dict(in_channels=[96, 192, 384, 768]))
