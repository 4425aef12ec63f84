# Semantic FPN (mmseg's base FPNHead, 128 channels, SyncBN) on an EfficientViT-MSRA of this repository with the
# detection neck of the official downstream code: EfficientViTFPN over the three stages (strides 16/32/64)
# plus two transposed-conv levels (strides 4, 8) -> five 256-channel maps; windows 7 in every stage
# (img_size=512), backbone BatchNorm frozen in eval mode (norm_eval), as for detection.
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='efficientvit_m4',
        out_indices=(0, 1, 2),
        norm_eval=True,
        model_kwargs=dict(img_size=512)),
    neck=dict(
        _delete_=True,
        type='EfficientViTFPN',
        in_channels=[128, 256, 384],
        out_channels=256,
        start_level=0,
        num_outs=5,
        num_extra_trans_convs=2),
    decode_head=dict(
        in_channels=[256, 256, 256, 256, 256],
        in_index=[0, 1, 2, 3, 4],
        feature_strides=[4, 8, 16, 32, 64],
        num_classes=150))
