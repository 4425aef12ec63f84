# 40k iterations with the official Agent-PVT Semantic FPN recipe (LeapLabTHU/Agent-Attention downstream/segmentation/configs/
# agent_pvt/fpn_agent_pvt_*.py, mmseg 0.x): AdamW lr 2e-4, weight decay 1e-4 on every parameter, poly (power 0.9)
# to 0 without warm-up; batch 2 per GPU (8 GPUs assumed).
_base_ = './schedule_40k_adamw.py'

optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))
