# COCO 2017 instance segmentation (data/coco/): mmdet's base unchanged, 2 images per GPU (x 8 GPUs = 16).
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
