# Semantic FPN (mmseg's base: FPN 256 channels, 4 levels, FPNHead 128 channels, dropout 0.1, SyncBN head) on a
# BiFormer of this repository, as the official rayleizhu/BiFormer segmentation backbone (BiFormer_mm) builds it:
# all four stages (strides 4..32), each through a LayerNorm (eps 1e-6, the official extra_norms), no frozen stages,
# the stem / downsample BatchNorms train and are synchronised across GPUs (sync_bn='torch': the official backbone
# converts its BatchNorms to SyncBatchNorm).
# Routing regions: the official ADE20K configs set n_win=8 ("training resolution is 512"), i.e. 8 x 8 routing
# regions per stage at every input size (512 x 512 crops: stage 1 is 128 x 128 tokens in regions of 16 x 16,
# stage 3 is 32 x 32 in regions of 4 x 4; whole-image tests at 2048 x 512 get larger regions); the ImageNet models
# use 7 x 7 with the same weights. mask_padding=False: the official auto_pad numerics (padding before the qkv
# projection, part of routing and attention).
_base_ = 'mmseg::_base_/models/fpn_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='biformer_small',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        drop_path_rate=0.15,
        model_kwargs=dict(num_regions=8, mask_padding=False)),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))
sync_bn = 'torch'
