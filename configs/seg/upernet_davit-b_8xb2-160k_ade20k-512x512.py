# UPerNet, DaViT-B backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official DaViT result (dingmyu/davit README, UPerNet 160k, ADE20K val):
#   49.4 mIoU  (121M params, 1175G FLOPs). The README does not say single- or multi-scale; its test command uses
#   --aug-test, so it is probably multi-scale + flip (tools/test.py --tta here).
# Official recipe: AdamW lr 6e-5 wd 0.01 on all parameters, linear warm-up 1500 it (1e-6x) + poly (power 1),
# drop path 0.3, window 7, per-output norms, auxiliary FCN head on stage 2 (loss weight 0.4).
# The official repository ships the DaViT-T config only (S/B by changing the architecture); drop path 0.3 is
# kept from it as no S/B value is published.
_base_ = [
    './_base_/models/upernet_davit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_davit.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_base.msft_in1k'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='davit_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
