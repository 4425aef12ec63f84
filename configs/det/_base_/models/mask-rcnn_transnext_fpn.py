# Mask R-CNN + FPN (mmdet's base RPN / RoI heads) on a TransNeXt of this repository, as the official TransNeXt
# detection code (DaiShiResearch/TransNeXt detection/maskrcnn, mmdet 2.28) builds it: all four stages, each
# returned after its own stage LayerNorm (the official backbone adds no further output norms, so out_norms=False);
# position bias computed for a 800 x 800 reference input (pretrain size 224) and bilinearly resized to the
# actual input (the official default, is_extrapolation=False: pos_bias_mode='interpolate', img_size=800).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=False,
        drop_path_rate=0.4,
        model_kwargs=dict(img_size=800, pretrain_size=224, pos_bias_mode='interpolate')),
    neck=dict(in_channels=[72, 144, 288, 576]))
