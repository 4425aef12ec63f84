# Mask R-CNN 3x, DaViT-B backbone, FPN, COCO 2017.
# Should reproduce the official DaViT result (dingmyu/davit README, Mask R-CNN 3x, COCO val2017):
#   49.9 box AP / 44.6 mask AP  (107.3M params, 491G FLOPs).
# Official recipe (dingmyu/davit mmdet/configs/davit_maskrcnn_3x_coco.py): multi-scale + crop training (480-800,
# AutoAugment as in DETR), AdamW lr 1e-4 wd 0.05 on all parameters, 36 epochs with steps [27, 33], batch 16 (8 GPUs x
# 2), drop path 0.2, window 7, per-output norms, fp32.
# Differs from mmdet's 3x bases (single-scale or resize-only multi-scale, SGD): DaViT's AutoAugment multi-scale crop
# (project base coco_instance_ms-crop.py) and AdamW. The official repository ships the DaViT-T config only (S/B by
# changing the architecture); drop path 0.2 is kept from it as no S/B value is published.
# Released detector (SharePoint): https://connecthkuhk-my.sharepoint.com/:u:/g/personal/u3007305_connect_hku_hk/Ed8kh4c1G41OmfIzo5sOS74Bccp1G65qg0H2s0WtcXUJZA?e=lnqLoQ
#   (a OneDrive link that ends in a query: download the file, then tools/test.py <this config> <file>).
_base_ = [
    './_base_/models/mask-rcnn_davit_fpn.py',
    './_base_/datasets/coco_instance_ms-crop.py',
    './_base_/schedules/schedule_3x_davit.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_base.msft_in1k'
model = dict(
    backbone=dict(
        model_name='davit_base',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
