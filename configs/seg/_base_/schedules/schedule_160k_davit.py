# 160k iterations with the official DaViT UPerNet recipe (dingmyu/davit
# mmseg/configs/upernet_davit_512x512_160k_ade20k.py): AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01 on
# every parameter (the official config has the usual 'norm' exclusion commented out); linear warm-up 1500
# iterations from 1e-6x, then poly decay (power 1.0) to 0; batch 16 (8 GPUs x 2).
_base_ = './schedule_160k.py'

optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
