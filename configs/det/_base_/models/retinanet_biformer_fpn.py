# RetinaNet + FPN (mmdet's base head, anchors, losses) on a BiFormer of this repository, as the official
# rayleizhu/BiFormer detection code builds it: the official FPN(start_level=1) over four stages reads stages 1..3
# (strides 8/16/32), which is what this adapter returns (FPN start_level=0), each through a LayerNorm (eps 1e-6,
# the official extra_norms), P6/P7 from extra convs on the last backbone map ('on_input'); stem / downsample
# BatchNorms in eval mode (norm_eval=True), no frozen stages. Routing regions: 16 x 16 per stage at every input
# size (official COCO n_win=16; see mask-rcnn_biformer_fpn.py), padding with the official numerics.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='biformer_small',
        out_indices=(1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=True,
        drop_path_rate=0.2,
        model_kwargs=dict(num_regions=16, mask_padding=False)),
    neck=dict(in_channels=[128, 256, 512], start_level=0, add_extra_convs='on_input', num_outs=5))
