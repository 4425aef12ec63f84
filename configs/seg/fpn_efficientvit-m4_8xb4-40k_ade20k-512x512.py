# Semantic FPN, EfficientViT-M4 backbone with the EfficientViTFPN neck, ADE20K, 512x512 crops, 40k iterations,
# batch 32 (8 GPUs x 4).
# No published number: the EfficientViT-MSRA paper and repository report no semantic-segmentation result; this
# config is an extra (Semantic-FPN recipe of mmseg's PVT / PoolFormer configs, no decay on attention biases).
_base_ = [
    './_base_/models/fpn_efficientvit.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_40k_adamw.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
train_dataloader = dict(batch_size=4)
# ImageNet-1k classification weights of the official release (Cream layout; the checkpoint filter maps it).
pretrained = 'https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0/efficientvit_m4.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(model_name='efficientvit_m4', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
