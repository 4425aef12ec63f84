# Mask R-CNN 3x, DaViT-T backbone, FPN, COCO 2017.
# Should reproduce the official DaViT result (dingmyu/davit README, Mask R-CNN 3x, COCO val2017):
#   47.4 box AP / 42.9 mask AP  (47.8M params, 263G FLOPs).
# Official recipe (dingmyu/davit mmdet/configs/davit_maskrcnn_3x_coco.py): multi-scale + crop training (480-800,
# AutoAugment as in DETR), AdamW lr 1e-4 wd 0.05 on all parameters, 36 epochs with steps [27, 33], batch 16 (8 GPUs x
# 2), drop path 0.2, window 7, per-output norms, fp32.
# Differs from mmdet's 3x bases (single-scale or resize-only multi-scale, SGD): DaViT's AutoAugment multi-scale crop
# (project base coco_instance_ms-crop.py) and AdamW.
# Released detector (SharePoint): https://connecthkuhk-my.sharepoint.com/:u:/g/personal/u3007305_connect_hku_hk/Ed1Su_p29_5KuX5Lbc2oq6gB3AVKnI-ojAT-yyICXWRbgg?e=XdJPsp
#   (a OneDrive link that ends in a query: download the file, then tools/test.py <this config> <file>).
_base_ = [
    './_base_/models/mask-rcnn_davit_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x_davit.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_tiny.msft_in1k'
model = dict(
    backbone=dict(
        model_name='davit_tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
