# RetinaNet + FPN (mmdet's base head) on a RAVLT of this repository, as the official qhfan/RALA RetinaNet configs
# build it: the official backbone returns all four stages and its FPN starts at level 1 (start_level=1,
# add_extra_convs='on_input', 5 outputs), i.e. stages 2-4 feed the neck; here only those three are returned
# (out_indices=(1, 2, 3), start_level=0: the same network without the unused stage-1 output). Per-output LayerNorms
# (eps 1e-6, the official extra_norms), stem / downsample BatchNorms trained and synchronised (SyncBN, as
# ./mask-rcnn_ravlt_fpn.py), no frozen stages.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='ravlt_s',
        out_indices=(1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=False,
        drop_path_rate=0.15),
    neck=dict(in_channels=[128, 320, 512], start_level=0, add_extra_convs='on_input', num_outs=5))
sync_bn = 'torch'
