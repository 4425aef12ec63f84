# UPerNet (mmseg's Swin UPerNet base: UPerHead 512 channels, pool scales 1/2/3/6, FCN auxiliary head on stage 2
# with loss weight 0.4, SyncBN heads) on a BiFormer of this repository, as the official rayleizhu/BiFormer
# segmentation backbone builds it: all four stages, each through a LayerNorm (eps 1e-6, the official
# extra_norms), no frozen stages, stem / downsample BatchNorms trained and synchronised (sync_bn='torch', as the
# official backbone converts them to SyncBatchNorm). 8 x 8 routing regions per stage at every input size (official
# ADE20K n_win=8; see fpn_biformer.py), padding with the official numerics.
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='biformer_small',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        drop_path_rate=0.3,
        model_kwargs=dict(num_regions=8, mask_padding=False)),
    decode_head=dict(in_channels=[64, 128, 256, 512], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
sync_bn = 'torch'
