# UPerNet (mmseg's Swin UPerNet base: UPerHead 512 channels, pool scales 1/2/3/6, FCN auxiliary head of 256
# channels on stage 3 with loss weight 0.4, SyncBN heads, whole-image test) on a RAVLT of this repository, as the
# official qhfan/RALA UperNet model (segmentation/configs/_base_/models/RALA_upper.py, the same heads) builds it:
# backbone as ./fpn_ravlt.py (all four stages, per-output LayerNorms eps 1e-6, SyncBN
# stem / downsample BatchNorms).
_base_ = 'mmseg::_base_/models/upernet_swin.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='ravlt_s',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=False,
        drop_path_rate=0.15),
    decode_head=dict(in_channels=[64, 128, 320, 512], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=320, in_index=2, num_classes=150))
sync_bn = 'torch'
