# Semantic FPN on an Agent-PVT of this repository, as the official segmentation backbone (LeapLabTHU/Agent-Attention
# downstream/segmentation/mmseg/models/backbones/agent_pvt.py, mmseg 0.x) builds it: all four stages without output
# norms, the official agent grids (12x12, 16x16, 28x28, 28x28 as agent_shapes).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='agent_pvt_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
