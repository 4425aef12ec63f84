# mmdet's runtime (default_scope='mmdet', hooks, nccl) plus a fixed seed, so that --resume replays the same
# data order (mmdet's base leaves the seed random).
# CPU: configs keep the official GPU settings; backbones.mm.runner adapts them when no GPU is present
# (SyncBN -> BN, dist backend gloo, CPU DDP wrapper, AMP off) and logs every change.
_base_ = 'mmdet::_base_/default_runtime.py'

randomness = dict(seed=0, deterministic=False)
# Official detector / segmentor checkpoints (load_from, tools/test.py CONFIG CHECKPOINT) are converted to the
# model's layout and loaded strictly (backbones.mm.checkpoint); also added by backbones.mm.runner to any config.
custom_hooks = [dict(type='DenseCheckpointLayoutHook')]
