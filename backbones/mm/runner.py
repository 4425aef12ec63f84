"""Train / evaluate mmdet and mmseg configs with mmengine's Runner, on GPUs or on a CPU-only machine.

    python -m backbones.mm.runner CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--launcher none|pytorch|slurm] [--tiny-data DIR] [--cfg-options k=v ...]
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--launcher ...] [--tta] [--tiny-data DIR]
        [--cfg-options ...]

``tools/train.py`` hands ``.py`` configs to :func:`main`; ``tools/test.py`` calls :func:`test_main`.

Without a GPU the config is adapted before the Runner is built (each change is logged):

* ``SyncBN`` / ``MMSyncBN`` norm cfgs become ``BN`` (the configs keep SyncBN as the official recipes do;
  non-distributed mmengine would revert SyncBN itself, but CPU DDP would fail on it);
* ``env_cfg.dist_cfg.backend`` becomes ``gloo``, and for ``--launcher pytorch|slurm`` the process group is
  created here (mmengine's init calls ``torch.cuda.set_device``) and DDP gets ``device_ids=None``;
* ``AmpOptimWrapper`` / ``--amp`` fall back to fp32 ``OptimWrapper`` (mmengine's AMP wrapper needs an accelerator).

``--tiny-data DIR`` applies :func:`backbones.mm.tiny.tiny_config`: the data set written by
``tools/make_tiny_data.py``, a reduced-width model of the same family and a few iterations (smoke runs).
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

__all__ = ["main", "test_main", "prepare_config", "cpu_adapt"]

_SYNC_BN = ("SyncBN", "MMSyncBN", "TorchSyncBN")


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="directory for logs and checkpoints (default work_dirs/<config name>)")
    parser.add_argument(
        "--launcher", choices=["none", "pytorch", "slurm"], default="none",
        help="none: one process; pytorch: started by torchrun; slurm: started by srun",
    )
    parser.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--tiny-data", metavar="DIR",
        help="smoke run on the data set of tools/make_tiny_data.py (shrinks the model, a few iterations)",
    )
    parser.add_argument(
        "--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
        help="override config entries, e.g. train_dataloader.batch_size=4 model.backbone.with_cp=True",
    )


def _parse_cfg_options(items: Sequence[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    from mmengine.config import DictAction

    ns = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="opts")(None, ns, list(items))
    return ns.opts


def _walk_replace_sync_bn(node: Any, path: str, changed: list[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") in _SYNC_BN:
            node["type"] = "BN"
            changed.append(path or "<root>")
        for k, v in node.items():
            _walk_replace_sync_bn(v, f"{path}.{k}" if path else str(k), changed)
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            _walk_replace_sync_bn(v, f"{path}[{i}]", changed)


def cpu_adapt(cfg: Any, amp: bool = False) -> list[str]:
    """Make ``cfg`` (an mmengine Config) run without a GPU; return the list of changes made."""
    notes: list[str] = []
    changed: list[str] = []
    for key in list(cfg.keys()):
        _walk_replace_sync_bn(cfg[key], key, changed)
    if changed:
        notes.append(f"SyncBN -> BN (no GPU) at {', '.join(sorted(set(changed)))}")
    if cfg.get("sync_bn"):  # the Runner would convert every BatchNorm to SyncBatchNorm, which needs an accelerator
        notes.append(f"sync_bn={cfg.sync_bn!r} dropped (SyncBatchNorm needs a GPU)")
        cfg.sync_bn = None
    env = cfg.setdefault("env_cfg", {})
    dist_cfg = env.setdefault("dist_cfg", {})
    if dist_cfg.get("backend", "nccl") != "gloo":
        dist_cfg["backend"] = "gloo"
        notes.append("env_cfg.dist_cfg.backend = 'gloo' (no GPU)")
    ow = cfg.get("optim_wrapper")
    if ow is not None and ow.get("type") == "AmpOptimWrapper":
        ow["type"] = "OptimWrapper"
        for k in ("loss_scale", "dtype", "use_fsdp"):
            ow.pop(k, None)
        notes.append("AmpOptimWrapper -> OptimWrapper (mmengine's AMP wrapper needs an accelerator; fp32 on CPU)")
    if amp:
        notes.append("--amp ignored: no GPU")
    if cfg.get("launcher", "none") != "none":
        wrapper = cfg.get("model_wrapper_cfg") or dict(type="MMDistributedDataParallel")
        if wrapper.get("type", "MMDistributedDataParallel") == "MMDistributedDataParallel":
            wrapper.setdefault("device_ids", None)  # DDP rejects device_ids for CPU modules
            wrapper.setdefault("broadcast_buffers", False)
            wrapper.setdefault("find_unused_parameters", cfg.get("find_unused_parameters", False))
            cfg.model_wrapper_cfg = wrapper
            notes.append("model_wrapper_cfg.device_ids = None (CPU DDP)")
    return notes


def _init_cpu_process_group(launcher: str, dist_cfg: dict) -> None:
    """What mmengine's init_dist does for ``launcher``, minus ``torch.cuda.set_device`` (fails without a GPU)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if launcher == "slurm":
        node_list = os.environ["SLURM_NODELIST"]
        os.environ.setdefault("MASTER_ADDR", subprocess.getoutput(f"scontrol show hostname {node_list} | head -n1"))
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    kwargs = {}
    if "timeout" in dist_cfg:
        kwargs["timeout"] = timedelta(seconds=dist_cfg["timeout"])
    dist.init_process_group(backend=dist_cfg.get("backend", "gloo"), **kwargs)


def prepare_config(
    config: str,
    *,
    work_dir: str | None = None,
    cfg_options: dict | None = None,
    launcher: str = "none",
    amp: bool = False,
    tiny_data: str | None = None,
) -> tuple[Any, list[str]]:
    """Load ``config`` and apply the command-line options; return the Config and notes of what was changed.

    Without a GPU the config is adapted by :func:`cpu_adapt` (and, for a distributed launcher, the gloo process
    group is created here).
    """
    from mmengine.config import Config
    from mmengine.device import get_device

    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    notes: list[str] = []
    if tiny_data is not None:
        from .tiny import tiny_config

        tiny_config(cfg, tiny_data)
        notes.append(f"--tiny-data {tiny_data}: tiny data set, reduced-width model, short schedule "
                     "(backbones.mm.tiny.tiny_config)")
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("work_dirs", osp.splitext(osp.basename(config))[0])

    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") in ("DenseCheckpointLayoutHook", "backbones.DenseCheckpointLayoutHook") for h in hooks):
        hooks.append(dict(type="DenseCheckpointLayoutHook"))  # official checkpoints: converted, loaded strictly
        cfg.custom_hooks = hooks
        notes.append("custom_hooks += DenseCheckpointLayoutHook (official checkpoints converted and loaded strictly)")

    on_gpu = get_device() != "cpu"
    if amp and on_gpu:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if not on_gpu:
        notes += [f"CPU run: {n}" for n in cpu_adapt(cfg, amp=amp)]
        if launcher != "none":
            _init_cpu_process_group(launcher, cfg.env_cfg.get("dist_cfg", {}))
    return cfg, notes


def _build_runner(cfg: Any, notes: Sequence[str]) -> Any:
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    for note in notes:  # after the Runner exists, so that they reach its log file
        runner.logger.info(note)
    return runner


def main(argv: Sequence[str] | None = None) -> Any:
    """Train an mmdet / mmseg config (``tools/train.py CONFIG ...`` dispatches ``.py`` configs here)."""
    parser = argparse.ArgumentParser(prog="backbones.mm.runner", description="train an mmdet/mmseg config")
    parser.add_argument("config", help="config file, e.g. configs/det/mask-rcnn_focalnet-t-srf_fpn_1x_coco.py")
    parser.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CKPT",
        help="resume from CKPT, or from the latest checkpoint in the work dir when CKPT is omitted",
    )
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU only)")
    _common_args(parser)
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))

    cfg, notes = prepare_config(
        args.config, work_dir=args.work_dir, cfg_options=_parse_cfg_options(args.cfg_options),
        launcher=args.launcher, amp=args.amp, tiny_data=args.tiny_data,
    )
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get("load_from") and "://" not in str(cfg.load_from):  # a clear error for an empty / cut-short file
        from backbones._weights import check_checkpoint_file

        check_checkpoint_file(cfg.load_from)
    runner = _build_runner(cfg, notes)
    runner.train()
    return runner


def test_main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Evaluate CHECKPOINT with CONFIG's test data and metric; return (and log) the metrics."""
    parser = argparse.ArgumentParser(prog="tools/test.py", description="evaluate a checkpoint of an mmdet/mmseg config")
    parser.add_argument("config", help="config file the checkpoint was trained with")
    parser.add_argument("checkpoint", help="checkpoint file (a path or URL)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation with the config's tta_model / tta_pipeline (mmseg configs)")
    _common_args(parser)
    args = parser.parse_args(argv)
    if "://" not in args.checkpoint:  # a clear error for a missing, empty or cut-short file, before the runner
        from backbones._weights import check_checkpoint_file

        check_checkpoint_file(args.checkpoint)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))

    cfg, notes = prepare_config(
        args.config, work_dir=args.work_dir, cfg_options=_parse_cfg_options(args.cfg_options),
        launcher=args.launcher, amp=False, tiny_data=args.tiny_data,
    )
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.tta:
        if "tta_model" not in cfg or "tta_pipeline" not in cfg:
            raise SystemExit(f"--tta: {args.config} defines no tta_model / tta_pipeline")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    runner = _build_runner(cfg, notes)
    metrics = runner.test()
    if runner.rank == 0:
        print("\n".join(f"{k}: {v}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
