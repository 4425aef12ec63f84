# UPerNet (mmseg's Swin UPerNet base: UPerHead 512 channels, FCN auxiliary head on stage 2, SyncBN heads) on
# a FocalNet of this repository, as the official FocalNet segmentation code builds it: focal windows 9,
# a LayerNorm on each of the four outputs (norm0..norm3), drop path 0.3.
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_srf',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=9)),
    decode_head=dict(in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150))
