# Semantic FPN (mmseg's base: FPN 256 channels, 4 levels, FPNHead 128 channels, dropout 0.1, SyncBN head) on a
# RAVLT of this repository, as the official qhfan/RALA segmentation backbone (GLTA in
# segmentation/mmseg/models/backbones/RALA.py, mmseg 0.x) builds it: all four stages (strides 4..32), each through
# a LayerNorm (eps 1e-6, the official extra_norms), no frozen stages, the stem / downsample BatchNorms trained and
# synchronised across GPUs: the official code builds them as nn.SyncBatchNorm, and its norm_eval=True default
# (kept by its configs) only puts nn.BatchNorm2d modules in eval mode, which SyncBatchNorm is not (both derive from
# _BatchNorm), so they trained: norm_eval=False, sync_bn='torch'.
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='ravlt_s',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=False,
        drop_path_rate=0.15),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
sync_bn = 'torch'
