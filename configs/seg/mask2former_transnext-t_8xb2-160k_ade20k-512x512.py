# Mask2Former, TransNeXt-T backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2).
# Should reproduce the official result (DaiShiResearch/TransNeXt segmentation/mask2former README, ADE20K val):
#   53.4 mIoU single-scale (47.5M params).
# Official recipe (segmentation/mask2former/configs/mask2former_transnext_tiny_160k_ade20k-512x512.py on mmseg's
# mask2former_r50_8xb2-160k_ade20k-512x512): random resize 0.5-2.0 + crop 512 + flip + photometric distortion,
# AdamW lr 1e-4 wd 0.05, backbone lr x0.1, no decay on biases / norms / 1-D parameters / query and level
# embeddings, gradient clipping 0.01, poly (0.9) over 160k iterations, drop path 0.3, position bias interpolated
# from a 512 x 512 reference, fp32.
# Differs from mmseg's base: the optimizer's backbone / embedding rules (in ./_base_/models/mask2former_transnext.py).
# Released segmentor: https://huggingface.co/DaiShiResearch/mask2former-transnext-tiny-ade/resolve/main/mask2former_transnext_tiny_512x512_160k_ade20k_in1k.pth
#   (mmseg 1.0 layout; tools/test.py <this config> <that file> loads it strictly).
_base_ = './_base_/models/mask2former_transnext.py'

# ImageNet-1k classification weights of the official release; the checkpoint filter maps the official layout.
pretrained = 'https://huggingface.co/DaiShiResearch/transnext-tiny-224-1k/resolve/main/transnext_tiny_224_1k.pth'
model = dict(
    backbone=dict(
        model_name='transnext_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[72, 144, 288, 576]))
