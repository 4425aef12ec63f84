# UPerNet (mmseg's ResNet-50 UPerNet base: UPerHead 512 channels, FCN auxiliary head on the stride-16 map,
# SyncBN heads) on a HaloNet of this repository: the four stride-4..32 maps (feature_info 1..4), BatchNorms
# trained and synchronised across GPUs (norm_eval=False and sync_bn='torch', as mmseg's SyncBN ResNet-50).
_base_ = 'mmseg::_base_/models/upernet_r50.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='halonet50ts',
        out_indices=(1, 2, 3, 4),
        norm_eval=False),
    decode_head=dict(in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=1024, in_index=2, num_classes=150))
sync_bn = 'torch'
