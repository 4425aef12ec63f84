# 160k iterations with the official BiFormer UPerNet recipe (rayleizhu/BiFormer semantic_segmentation/configs,
# UniFormer's and CSWin's): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no weight decay for parameters
# whose name contains 'norm'; linear warm-up 1500 iterations from 1e-6x, then poly decay (power 1.0) to 0;
# batch 16 (8 GPUs x 2). The official BatchNorm parameter names (downsample_layers.*) contain no 'norm', so they
# were decayed; ours are named stem.norm* / downsample.norm, hence the two longer keys restoring decay (mmengine
# applies the longest matching key). The official runs used fp16 (loss scale 512; its comment: fp32 if the loss
# turns NaN): --amp on GPUs.
_base_ = './schedule_160k.py'

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'stem.norm': dict(decay_mult=1.),
            'downsample.norm': dict(decay_mult=1.),
        }))
