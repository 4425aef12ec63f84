# Semantic FPN (mmseg's base: FPN 256 channels, 4 levels, FPNHead 128 channels, dropout 0.1, SyncBN head) on a
# LITv2 of this repository, as the official ziplab/LITv2 segmentation code builds it: all four stages (strides
# 4..32), each through a LayerNorm (the official segmentation backbone's norm0..norm3), alpha 0.9, HiLo windows
# 2 in stage 3 and 1 (global attention) in stage 4, no frozen stages, token-merging BatchNorms in train mode and
# per GPU (no sync_bn): the official segmentation/mmseg/models/backbones/litv2.py builds plain nn.BatchNorm2d and
# does not convert them (its SyncBN is the head's norm_cfg only).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='litv2_small',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.2,
        model_kwargs=dict(alpha=0.9, window_sizes=(0, 0, 2, 1))),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))
