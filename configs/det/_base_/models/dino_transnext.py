# DINO (mmdet's dino-4scale_r50_8xb2-12e_coco: 900 queries, 6 + 6 deformable layers, two-stage, box refinement,
# contrastive denoising with 100 queries, DETR multi-scale + crop augmentation, AdamW lr 1e-4 wd 1e-4, gradient
# clipping 0.1, lr x0.1 after epoch 11 of 12) on a TransNeXt of this repository, as the official TransNeXt DINO
# code (DaiShiResearch/TransNeXt detection/dino, mmdet 3.0) builds it: every stage returned after its own stage
# LayerNorm (out_norms=False), the position bias computed for an 800 x 800 reference input and bilinearly resized
# (img_size=800, pretrain size 224), the channel mapper adding one extra level (num_outs = levels).
# mmdet ships DINO as one full config (model, data, schedule), hence a single chain of inheritance here.
# Optimizer, as the official configs: the backbone at lr x0.1; no weight decay on any bias, norm or other 1-D
# parameter (bias / norm / flat decay mults 0) nor on the query embeddings, local position biases, CPB MLPs and
# temperatures of the backbone. The official keys name the patch embeddings and stage norms 1..3 only, so stage
# 4's downsample (patch_embed4) and stage norm (norm4) train at the full lr: kept (stages.3.* keys below).
# Batch 16 as 8 GPUs x 1 image x 2 accumulated steps (train_dataloader.batch_size=1, accumulative_counts=2).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

num_levels = 5
model = dict(
    num_feature_levels=num_levels,
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=False,
        drop_path_rate=0.3,
        model_kwargs=dict(img_size=800, pretrain_size=224, pos_bias_mode='interpolate')),
    neck=dict(in_channels=[72, 144, 288, 576], num_outs=num_levels),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=num_levels))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=num_levels))))

_nodecay = dict(lr_mult=0.1, decay_mult=0.)
_stage4 = dict(lr_mult=1.0, decay_mult=0.)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    accumulative_counts=2,
    paramwise_cfg=dict(
        _delete_=True,
        bias_decay_mult=0.,
        norm_decay_mult=0.,
        flat_decay_mult=0.,
        # mmengine applies the longest key contained in a name: every specific key is longer than 'backbone'.
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'attn.query_embedding': _nodecay,
            'relative_pos_bias_local': _nodecay,
            'attn.cpb_fc': _nodecay,
            'attn.temperature': _nodecay,
            'attn.pool_norm': _nodecay,
            '.norm1.weight': _nodecay,
            '.norm1.bias': _nodecay,
            '.norm2.weight': _nodecay,
            '.norm2.bias': _nodecay,
            'attn.q.bias': _nodecay,
            'attn.kv.bias': _nodecay,
            'attn.qkv.bias': _nodecay,
            'attn.pool_proj.bias': _nodecay,
            'attn.proj.bias': _nodecay,
            'mlp.fc1.bias': _nodecay,
            'mlp.fc2.bias': _nodecay,
            'mlp.dwconv.bias': _nodecay,
            'downsample.proj.bias': _nodecay,
            'downsample.norm': _nodecay,
            'backbone.model.stages.0.norm': _nodecay,
            'backbone.model.stages.1.norm': _nodecay,
            'backbone.model.stages.2.norm': _nodecay,
            'backbone.model.stages.3.downsample.proj.weight': dict(lr_mult=1.0),
            'backbone.model.stages.3.downsample.proj.bias': _stage4,
            'backbone.model.stages.3.downsample.norm': _stage4,
            'backbone.model.stages.3.norm': _stage4,
        }))
train_dataloader = dict(batch_size=1)
# as ../default_runtime.py: a fixed seed (--resume replays the same data order) and the checkpoint-layout hook
randomness = dict(seed=0, deterministic=False)
custom_hooks = [dict(type='DenseCheckpointLayoutHook')]
