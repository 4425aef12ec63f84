# RetinaNet 1x, DaViT-B backbone, FPN, COCO 2017 (boxes only).
# Should reproduce the official DaViT result (dingmyu/davit README, RetinaNet 1x, COCO val2017):
#   46.7 box AP  (98.5M params, 471G FLOPs).
# Official recipe (dingmyu/davit mmdet/configs/davit_retinanet_1x_coco.py): multi-scale + crop training (480-800,
# AutoAugment as in DETR), FPN on stages 1..3 with extra levels on the input, AdamW lr 1e-4 wd 0.05 on all parameters,
# 12 epochs with steps [8, 11], batch 16 (8 GPUs x 2), drop path 0.1, window 7, per-output norms, fp32. The official
# repository ships the DaViT-T config only (S/B by changing the architecture); drop path 0.1 is kept from it as no S/B
# value is published.
# Released detector (SharePoint): https://connecthkuhk-my.sharepoint.com/:u:/g/personal/u3007305_connect_hku_hk/ESKE9OFCDzxGo2D2Eyr29c0BFhc-j8OjF2WRoSxSK0gn4g?e=KfyJCA
#   (a OneDrive link that ends in a query: download the file, then tools/test.py <this config> <file>).
_base_ = [
    './_base_/models/retinanet_davit_fpn.py',
    './_base_/datasets/coco_detection_ms-crop.py',
    './_base_/schedules/schedule_1x_davit.py',
    './_base_/default_runtime.py',
]

# ImageNet-1k weights of the official release (dingmyu/davit), as converted and hosted by timm.
pretrained = 'timm:davit_base.msft_in1k'
model = dict(
    backbone=dict(
        model_name='davit_base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[256, 512, 1024]))
