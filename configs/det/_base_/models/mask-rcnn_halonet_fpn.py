# Mask R-CNN + FPN (mmdet's ResNet-50 base) on a HaloNet of this repository: the four stride-4..32 maps
# (feature_info 1..4: stages.0, stages.1, stages.2, final_conv), no extra output norms (a BN network, as
# ResNet-50), stem and stages.0 frozen (frozen_stages=1) and
# BatchNorm statistics frozen while training (norm_eval, mmdet's ResNet-50 setting for 2 images
# per GPU). Any input size works: halo attention pads to its block size itself (timm's version needs inputs
# divisible by 256), so mmdet's pad_size_divisor=32 is kept.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='halonet50ts',
        out_indices=(1, 2, 3, 4),
        frozen_stages=1,
        norm_eval=True),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
