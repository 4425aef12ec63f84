# UPerNet, TransNeXt-T backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official result (DaiShiResearch/TransNeXt README, UPerNet 160k, ADE20K val, 59M params):
#   51.1 mIoU single-scale (sliding 512x512 windows, stride 341: this config);
#   51.5 mIoU multi-scale + flip with the bias interpolated from an 800 x 800 reference (tools/test.py --tta
#   --cfg-options model.backbone.model_kwargs.img_size=800), 51.7 mIoU with the bias extrapolated instead
#   (--cfg-options model.backbone.model_kwargs.pos_bias_mode=extrapolate). Same trained weights for all three.
# Official recipe: AdamW lr 6e-5 weight decay 0.05 (none on norms, query embeddings, local position biases, CPB
# MLPs and temperatures), linear warm-up 1500 it (1e-6x) + poly (power 1), drop path 0.4, auxiliary FCN head on
# stage 2 (loss weight 0.4), fp32, position bias interpolated from a 512 x 512 reference.
_base_ = [
    './_base_/models/upernet_transnext.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_transnext.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k/resolve/main/transnext_tiny_224_1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='transnext_tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
