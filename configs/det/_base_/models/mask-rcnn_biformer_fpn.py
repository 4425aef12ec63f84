# Mask R-CNN + FPN (mmdet's base RPN / RoI heads) on a BiFormer of this repository, as the official
# rayleizhu/BiFormer detection backbone (BiFormer_mm) builds it: all four stages (strides 4..32), each output
# through a LayerNorm (eps 1e-6, the official extra_norms), the stem / downsample BatchNorms kept in eval mode
# while training (norm_eval=True, their affine parameters still train), no frozen stages. No sync_bn: the official
# object_detection/models_mm/biformer_mm.py keeps plain nn.BatchNorm2d, which its norm_eval does reach (only the
# segmentation copy, semantic_segmentation/models_mm/biformer_mm.py, converts to SyncBatchNorm and trains them).
# Routing regions: the official COCO configs set n_win=16, i.e. 16 x 16 routing regions per stage whatever the
# input size (the region *count* is fixed, the region *size* follows the image: at 800 x 1216 stage 1 is 200 x 304
# tokens in regions of 13 x 19, stage 3 is 50 x 76 in regions of 4 x 5); the ImageNet models use 7 x 7 with the
# same weights. mask_padding=False: regions are zero-padded before the qkv projection and the padding takes part
# in routing and attention, as in the official auto_pad code (mask_padding=True keeps it out).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='biformer_small',
        out_indices=(0, 1, 2, 3),
        out_norms=dict(type='LN', eps=1e-6),
        norm_eval=True,
        drop_path_rate=0.2,
        model_kwargs=dict(num_regions=16, mask_padding=False)),
    neck=dict(in_channels=[64, 128, 256, 512]))
