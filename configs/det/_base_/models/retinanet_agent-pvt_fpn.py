# RetinaNet + FPN on an Agent-PVT of this repository, as the official detection backbone builds it (see
# ./mask-rcnn_agent-pvt_fpn.py): no output norms, the official agent grids. The official FPN takes all four stages
# with start_level=1 and extra convs on the input; ours takes stages 1..3 with start_level=0 (the same network).
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='agent_pvt_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[128, 320, 512], start_level=0, add_extra_convs='on_input', num_outs=5))
