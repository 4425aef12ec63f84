# Mask R-CNN + FPN (mmdet's base RPN / RoI heads) on an Agent-PVT of this repository, as the official detection
# backbone (LeapLabTHU/Agent-Attention downstream/detection/mmdet/models/backbones/agent_pvt.py, mmdet 2.x) builds it: all four
# stages (strides 4..32) without output norms (the official AgentPVT returns the raw stage maps), no classification
# head, the agent grids of the official configs (12x12, 16x16, 28x28, 28x28, passed as agent_shapes; every agent
# bias is resized to the map and the agent grid, as the official dense copy does), no frozen stages.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='agent_pvt_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
    neck=dict(in_channels=[64, 128, 320, 512]))
