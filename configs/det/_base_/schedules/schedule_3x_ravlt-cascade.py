# 3x (36 epochs) with the official RAVLT Cascade Mask R-CNN 3x recipe (qhfan/RALA detection/configs/RALA/casrcnn_*_3x.py,
# mmdet 2.x): ./schedule_3x_ravlt.py (AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, 500 warm-up iterations
# from 0.001x, lr x0.1 after epochs 27 and 33) with the cascade configs' weight-decay rule: norm_decay_mult=0 on top
# of the 'norm' key, i.e. no decay on any normalisation layer (the stem BatchNorms and the cascade heads' SyncBN
# included, unlike the Mask R-CNN recipe) nor on parameters whose name contains 'norm' (the absolute_pos_embed /
# relative_position_bias_table / rpe_table keys listed there match nothing in RAVLT).
_base_ = './schedule_3x_ravlt.py'

optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.,
        custom_keys={'norm': dict(decay_mult=0.)}))
