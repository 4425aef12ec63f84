# Semantic FPN, Agent-PVT-T backbone, ADE20K, 512x512 crops, 40k iterations, batch 16 (8 GPUs x 2 assumed).
# Should reproduce the official result (LeapLabTHU/Agent-Attention downstream/segmentation/README.md, Semantic FPN 40K, ADE20K val):
#   40.18 mIoU (official config downstream/segmentation/configs/agent_pvt/fpn_agent_pvt_t_12-16-28-28.py).
# Official recipe: AdamW lr 2e-4 weight decay 1e-4 on every parameter, poly (power 0.9) to 0 without warm-up, drop
# path 0.1, agent grids 12-16-28-28, no output norms. Released segmentor: https://cloud.tsinghua.edu.cn/f/5e7bf988b4b74efe8654/?dl=1
# (mmseg 0.x keys; loads strictly, see docs/openmmlab.md). (Agent-PVT-M has no released FPN weights: no config.)
# Train: python -m backbones.mm.runner <this config> [--launcher pytorch]
_base_ = [
    './_base_/models/fpn_agent-pvt.py',
    './_base_/datasets/ade20k.py',
    './_base_/schedules/schedule_40k_agent-pvt.py',
    './_base_/default_runtime.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        model_name='agent_pvt_tiny',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm:agent_pvt_tiny.in1k')))
