#!/usr/bin/env python
"""Evaluate a checkpoint of an mmdet / mmseg config (configs/det, configs/seg) with its test data and metric.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--launcher none|pytorch|slurm] [--tta]
        [--tiny-data DIR] [--cfg-options KEY=VALUE ...]

Multi-process: ``torchrun --nproc-per-node N tools/test.py CONFIG CHECKPOINT --launcher pytorch``.
All logic lives in :func:`backbones.mm.runner.test_main`.
"""

import sys

from backbones._openmmlab_setup import require_openmmlab

if __name__ == "__main__":
    require_openmmlab("tools/test.py")
    from backbones.mm.runner import test_main

    test_main(sys.argv[1:])
