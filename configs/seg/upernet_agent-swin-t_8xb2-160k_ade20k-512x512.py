# UPerNet, Agent-Swin-T backbone, ADE20K, 512x512 crops, 160k iterations, batch 16 (8 GPUs x 2 assumed).
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/segmentation/README.md, UperNet 160K, ADE20K val):
#   46.68 mIoU (the 46.7; official config downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py).
# Official recipe: AdamW lr 6e-5 weight decay 0.01 (none on norms, position and agent bias tables), linear warm-up
# 1500 it + poly (power 1), drop path 0.3, agent grids 9-12-14-7, per-output LayerNorms, auxiliary FCN head on
# stage 3. Released segmentor: https://cloud.tsinghua.edu.cn/f/280481ee38024bce8364/?dl=1 (mmseg 0.x keys; loads
# strictly, see docs/openmmlab.md). Agent-Swin-S / B UPerNet rows have empty weight links in the README: no configs.
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/upernet_agent-swin.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_160k_agent-swin.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='agent_swin_tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_swin_tiny.in1k')))
