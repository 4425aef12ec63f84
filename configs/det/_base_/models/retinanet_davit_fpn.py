# RetinaNet + FPN (mmdet's base) on a DaViT of this repository. The official DaViT RetinaNet feeds stages 1..3
# to the FPN (start_level=1 over four inputs, extra levels 'on_input'); here the adapter returns stages 1..3 only
# (stage 0 would be an unused output) and the FPN starts at its first input: the same network. Per-output
# LayerNorms as in the official detection backbone.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='davit_tiny',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input', num_outs=5))
