# UPerNet on an Agent-Swin of this repository, as the official segmentation backbone (LeapLabTHU/Agent-Attention
# downstream/segmentation/mmseg/models/backbones/agent_swin.py, mmseg 0.x) builds it: per-output LayerNorms (norm0..3),
# the official agent grids (9x9, 12x12, 14x14, 7x7), auxiliary FCN head on stage 3.
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='agent_swin_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
    decode_head=dict(in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150))
