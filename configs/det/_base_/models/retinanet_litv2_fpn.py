# RetinaNet + FPN (mmdet's base head, anchors, losses) on a LITv2 of this repository, as the official
# ziplab/LITv2 detection code builds it: the FPN reads stages 1..3 (strides 8/16/32; the official backbone also
# returns stage 0, which its FPN skips with start_level=1), each through a LayerNorm (the official norm1..norm3),
# P6/P7 from extra convs on the last backbone map ('on_input'); alpha 0.9, HiLo windows 2 in stage 3 and 1
# (global attention) in stage 4, no frozen stages, the token-merging BatchNorms train normally (no norm_eval) and
# per GPU (no sync_bn), as the official detection/mmdet/models/backbones/litv2.py (plain nn.BatchNorm2d).
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='litv2_small',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.2,
        model_kwargs=dict(alpha=0.9, window_sizes=(0, 0, 2, 1))),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input', num_outs=5))
