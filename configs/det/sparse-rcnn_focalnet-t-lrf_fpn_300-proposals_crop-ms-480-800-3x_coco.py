# Sparse R-CNN 3x (300 proposals), FocalNet-T (LRF) backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official FocalNet result (microsoft/FocalNet README, Sparse R-CNN 3x, COCO val2017):
#   49.9 box AP  (focal windows [11, 9, 9, 7]).
# Official recipe
# (detection/configs/focalnet/sparse_rcnn_focalnet_tiny_fpn_300_proposals_crop_mstrain_480-800_3x_coco_lrf.py, on
# mmdet's sparse_rcnn 300-proposals crop-ms 3x): multi-scale + crop training (480-800), AdamW lr 2.5e-5 wd 1e-4 on every
# parameter, gradient clipping at norm 1, 36 epochs with steps [27, 33], batch 16 (8 GPUs x 2), 6 DII stages, drop path
# 0.3, focal windows [11, 9, 9, 7], four stages with per-output norms, FPN with 4 levels. This is mmdet's own
# sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco with the backbone swapped. (The official config's `_base_ =
# '../_base_/sparse_rcnn_focalnet_fpn.py'` points to a missing file; its model base is under _base_/models/ in the
# tree.)
# Released detector: https://projects4jw.blob.core.windows.net/focalnet/release/detection/focalnet_tiny_lrf_sparsercnn_3x.pth
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

pretrained = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/focalnet_tiny_lrf.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_tiny_lrf',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(11, 9, 9, 7)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
# as ./_base_/default_runtime.py: a fixed seed (--resume replays the same data order) and the checkpoint-layout hook
randomness = dict(seed=0, deterministic=False)
custom_hooks = [dict(type='DenseCheckpointLayoutHook')]
