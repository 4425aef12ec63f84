# Mask R-CNN (mmdet's base RPN / RoI heads) on an EfficientViT-MSRA of this repository, as the official
# downstream code (microsoft/Cream EfficientViT/downstream) builds it: the three stages (strides 16/32/64),
# windows 7 in every stage (img_size=800), every BatchNorm of the backbone frozen in eval mode (norm_eval);
# neck EfficientViTFPN: two transposed-conv levels below stride 16 give P2 (stride 4) and P3 (stride 8),
# P4-P6 come from the backbone (no extra coarse level), matching the RPN strides 4..64.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='efficientvit_m4',
        out_indices=(0, 1, 2),
        norm_eval=True,
        model_kwargs=dict(img_size=800)),
    neck=dict(
        _delete_=True,
        type='EfficientViTFPN',
        in_channels=[128, 256, 384],
        out_channels=256,
        start_level=0,
        num_outs=5,
        num_extra_trans_convs=2))
