# RetinaNet + FPN (mmdet's ResNet-50 base) on a HaloNet of this repository: the stride-8/16/32 maps
# (feature_info 2..4), FPN from its first input with P6/P7 from the stride-32 map (mmdet's R50 RetinaNet reads
# C3..C5 the same way), stem and stages.0 frozen (frozen_stages=1) and
# BatchNorm statistics frozen while training (norm_eval), no extra output norms.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='halonet50ts',
        out_indices=(2, 3, 4),
        frozen_stages=1,
        norm_eval=True),
    neck=dict(in_channels=[512, 1024, 2048], start_level=0, num_outs=5))
