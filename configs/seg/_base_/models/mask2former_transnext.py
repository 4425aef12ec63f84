# Mask2Former (mmseg's mask2former_r50_8xb2-160k_ade20k-512x512: multi-scale deformable pixel decoder, 100
# queries, 9 masked-attention decoder layers, 512 x 512 crops, AdamW lr 1e-4 wd 0.05 eps 1e-8, gradient clipping
# 0.01, poly decay (power 0.9) over 160k iterations, batch 16) on a TransNeXt of this repository, as the official
# TransNeXt Mask2Former code (DaiShiResearch/TransNeXt segmentation/mask2former, mmseg 1.0) builds it: all four
# stages after their stage LayerNorms (out_norms=False), position bias for a 512 x 512 reference input
# (img_size=512, pretrain size 224) bilinearly resized to the actual input.
# mmseg ships Mask2Former as one full config (model, data, schedule), hence a single chain of inheritance here.
# Optimizer, as the official configs: the backbone at lr x0.1 (stage 4's downsample and stage norm at x1: the
# official keys name patch embeddings / norms 1..3 only); no weight decay on any bias, norm or other 1-D
# parameter, nor on the backbone's query embeddings, local position biases, CPB MLPs and temperatures, nor on the
# head's query / level embeddings (which train at lr x1). Unlike mmseg's base, the head's norms follow the
# official norm_decay_mult=0 too.
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['backbones.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmBackboneAdapter',
        model_name='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=False,
        drop_path_rate=0.3,
        model_kwargs=dict(img_size=512, pretrain_size=224, pos_bias_mode='interpolate')),
    decode_head=dict(in_channels=[72, 144, 288, 576]))

_nodecay = dict(lr_mult=0.1, decay_mult=0.)
_stage4 = dict(lr_mult=1.0, decay_mult=0.)
_embed = dict(lr_mult=1.0, decay_mult=0.)
optim_wrapper = dict(
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
            'decode_head.query_embed': _embed,
            'decode_head.query_feat': _embed,
            'decode_head.level_embed': _embed,
        }))
# as ../default_runtime.py: a fixed seed (--resume replays the same data order) and the checkpoint-layout hook
randomness = dict(seed=0, deterministic=False)
custom_hooks = [dict(type='DenseCheckpointLayoutHook')]
