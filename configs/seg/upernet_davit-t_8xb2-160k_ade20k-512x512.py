# UPerNet, DaViT-T backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official DaViT result (dingmyu/davit README, UPerNet 160k, ADE20K val):
#   46.3 mIoU  (60M params, 940G FLOPs). The README does not say single- or multi-scale; its test command uses
#   --aug-test, so it is probably multi-scale + flip (tools/test.py --tta here).
# Official recipe: AdamW lr 6e-5 wd 0.01 on all parameters, linear warm-up 1500 it (1e-6x) + poly (power 1),
# drop path 0.3, window 7, per-output norms, auxiliary FCN head on stage 2 (loss weight 0.4).
_base_ = [
    './_base_/models/upernet_davit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_davit.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_tiny.msft_in1k'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='davit_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
