# 160k iterations with the official TransNeXt UPerNet recipe (DaiShiResearch/TransNeXt
# segmentation/upernet/configs/upernet_transnext_*_512x512_160k_ade20k_ss.py, mmseg 0.30): AdamW lr 6e-5, betas
# (0.9, 0.999), weight decay 0.05, no weight decay for parameters whose name contains query_embedding,
# relative_pos_bias_local, cpb, temperature or norm; linear warm-up 1500 iterations from 1e-6x, then poly decay
# (power 1.0) to 0; batch 16 (8 GPUs x 2). Validation and checkpoints every 16k iterations (mmseg's 160k base).
_base_ = './schedule_160k.py'

optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'query_embedding': dict(decay_mult=0.),
            'relative_pos_bias_local': dict(decay_mult=0.),
            'cpb': dict(decay_mult=0.),
            'temperature': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
