# UPerNet (mmseg's Swin UPerNet base: UPerHead 512 channels, pool scales (1, 2, 3, 6), FCN auxiliary head on
# stage 2 with loss weight 0.4, SyncBN heads) on a DaViT of this repository, as the official DaViT segmentation
# code (dingmyu/davit mmseg/) builds it: all four stages, a LayerNorm on each output (norm0..norm3), window 7.
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='davit_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150))
