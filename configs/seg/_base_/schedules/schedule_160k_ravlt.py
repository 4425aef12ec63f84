# 160k iterations ("2x") with the official RAVLT UperNet recipe (qhfan/RALA segmentation/configs/RALA/RALA_Uper_*_2x.py,
# mmseg 0.x, after UniFormer / CSWin): ./schedule_160k.py (AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01,
# linear warm-up 1500 iterations from 1e-6x, poly power 1.0 to 0) with no decay on parameters whose name contains
# 'norm'. The official stem BatchNorms (patch_embed.proj.1/4/7/10) have no 'norm' in their names and were decayed;
# ours are stem.norm*, hence the longer key restoring decay (mmengine applies the longest matching key).
# Validation and checkpoints every 8k iterations as the official configs; batch 2 per GPU (16 = 8 x 2 assumed);
# fp16 in the official runs (Fp16OptimizerHook, loss scale 512): --amp on GPUs.
_base_ = './schedule_160k.py'

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'stem.norm': dict(decay_mult=1.)}))  # 'norm': decay_mult 0 comes from ./schedule_160k.py
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
