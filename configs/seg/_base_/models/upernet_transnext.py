# UPerNet (mmseg's Swin UPerNet base: UPerHead 512 channels, pool scales (1, 2, 3, 6), FCN auxiliary head on
# stage 2 with loss weight 0.4, SyncBN heads) on a TransNeXt of this repository, as the official TransNeXt
# segmentation code (DaiShiResearch/TransNeXt segmentation/upernet, mmseg 0.30) builds it: all four stages, each
# returned after its own stage LayerNorm (no further output norms: out_norms=False); position bias computed for a
# 512 x 512 reference input (pretrain size 224) and bilinearly resized to the actual input (the official
# single-scale setting, is_extrapolation=False).
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=False,
        drop_path_rate=0.4,
        model_kwargs=dict(img_size=512, pretrain_size=224, pos_bias_mode='interpolate')),
    decode_head=dict(in_channels=[72, 144, 288, 576], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=288, in_index=2, num_classes=150))
