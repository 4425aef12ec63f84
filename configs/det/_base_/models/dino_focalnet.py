# DINO (mmdet's dino-4scale_r50_8xb2-12e_coco: 900 queries, 6 + 6 deformable layers, two-stage, box refinement, 100
# denoising queries, DETR multi-scale + crop augmentation, AdamW lr 1e-4 wd 1e-4, backbone lr x0.1, gradient clipping
# 0.1, batch 16) on a FocalNet-L of this repository, as detrex's DINO-FocalNet (IDEA-Research/detrex
# projects/dino/configs/models/dino_focalnet.py, detectron2) builds it: FocalNet-L (embed 192, depths 2/2/18/2,
# overlapped downsampling, post-norm, LayerScale 1e-4, no modulator normalisation), drop path 0.3 (detrex's default),
# focal windows 5 (3 levels: kernels 5/7/9) or 3 (4 levels: 3/5/7/9), a LayerNorm on each returned stage (detrex's
# norm{i}), a 1x1 GN channel mapper with one extra stride-2 level.
# Differs from mmdet's DINO base in the sine position encoding: detrex's is temperature 10000, offset -0.5 (mmdet's
# DINO: 20 and 0.0), which the released detrex weights were trained with. mmdet ships DINO as one full config (model,
# data, schedule), hence a single chain of inheritance here.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='focalnet_large_fl3',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=5)),
    neck=dict(in_channels=[384, 768, 1536], num_outs=4),
    positional_encoding=dict(temperature=10000, offset=-0.5))
# as ../default_runtime.py: a fixed seed (--resume replays the same data order) and the checkpoint-layout hook
randomness = dict(seed=0, deterministic=False)
custom_hooks = [dict(type='DenseCheckpointLayoutHook')]
