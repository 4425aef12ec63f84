# RetinaNet (mmdet's base head, anchors, losses) on an EfficientViT-MSRA of this repository, as the official
# downstream code (microsoft/Cream EfficientViT/downstream) builds it: the three stages (strides 16/32/64),
# windows 7 in every stage (img_size=800: the window is min(7, stage size) and the official detection backbone
# uses 7 throughout), every BatchNorm of the backbone frozen in eval mode (norm_eval), nothing else frozen;
# neck EfficientViTFPN: one transposed-conv level below stride 16 gives P3 (stride 8), P4-P6 come from the
# backbone and P7 from a 3x3 stride-2 conv on the raw stride-64 map ('on_input', as the official config
# inherits it from mmdet's RetinaNet base).
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

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
        add_extra_convs='on_input',
        num_outs=5,
        num_extra_trans_convs=1))
