#!/usr/bin/env python3
"""Train an image classifier from a recipe; a ``.py`` (mmdet / mmseg) config goes to ``backbones.mm.runner``.

    python tools/train.py configs/cls/digits_focalnet_nano.yaml --output runs/demo
    python tools/train.py RECIPE.yaml lr=0.05 model_kwargs.embed_dim=48     # overrides, values parsed as YAML
    python tools/train.py RECIPE.yaml --set epochs=5 --set amp=true         # the same, spelled --set
    python tools/train.py RECIPE.yaml --resume runs/demo/last.pth.tar       # continue exactly where it stopped
    python tools/train.py RECIPE.yaml --output runs/demo --resume auto      # resume OUTPUT/last.pth.tar if there
    torchrun --nproc_per_node 2 tools/train.py RECIPE.yaml                  # distributed; batch_size is per process
    python tools/train.py configs/det/CONFIG.py ...                         # -> backbones.mm.runner.main(argv)

The recipe's keys (``backbones.engine.DEFAULTS``) are named like timm's train.py arguments. Data, optimiser,
schedule, mixup/cutmix, model EMA, loss functions and checkpoints are timm's factories and classes.

Distributed: under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK) or, when those are absent, under slurm
(SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID with MASTER_ADDR / MASTER_PORT exported). gloo on CPU, nccl on CUDA.
The training sampler is seeded with ``seed`` and reshuffled per epoch, and a single process draws the same
permutation as a distributed run, so N processes x batch B step through the same global batches as 1 x N*B.

Resume is exact: a checkpoint holds the model, optimiser, scheduler, step counters, EMA, gradient scaler and the
RNG states (python, numpy, torch, CUDA) of every rank, taken where the next epoch starts; the sampler order is a
function of (seed, epoch). ``recovery_interval: N`` also saves ``recovery-EPOCH-STEP.pth.tar`` every N updates;
resuming one of those replays the epoch's data up to that step (loading, not training) and restores the RNG states
of that step, which is exact too unless timm's CUDA prefetcher applies random erasing.

OUTPUT gets: config.yaml (the resolved recipe), metrics.csv (per epoch: epoch, train_loss, eval_loss, top1, top5, lr,
time [, ema_*]), metrics.png, steps.csv (per update: epoch, step, batch, loss, lr), train.log, last.pth.tar,
model_best.pth.tar and checkpoint-EPOCH.pth.tar (timm's CheckpointSaver; epochs counted from 0 everywhere).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn

from backbones.train_utils import (
    CsvLog,
    Dist,
    add_auxiliary_loss,
    gather,
    init_distributed,
    plot_metrics,
    rng_state,
    seed_all,
    set_rng_state,
    set_sampler_epoch,
)

_logger = logging.getLogger("backbones.train")

METRIC_FIELDS = ["epoch", "train_loss", "eval_loss", "top1", "top5", "lr", "time"]
EMA_FIELDS = ["ema_eval_loss", "ema_top1", "ema_top5"]
STEP_FIELDS = ["epoch", "step", "batch", "loss", "lr"]


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/train.py",
        description="Train a classifier from a YAML recipe (configs/cls/*.yaml), or run an mmdet/mmseg .py config.",
    )
    parser.add_argument("config", help="recipe .yaml (a .py config is handed to backbones.mm.runner)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, values parsed as YAML")
    parser.add_argument("--set", dest="set_", action="append", default=[], metavar="key=value", help="an override")
    parser.add_argument("--output", "-o", default="", help="output folder (default runs/<recipe name>)")
    parser.add_argument("--resume", default="", help="checkpoint to continue from, or 'auto' for OUTPUT/last.pth.tar")
    return parser.parse_intermixed_args(argv)


def _run_mm(argv: Sequence[str]) -> Any:
    import importlib

    from backbones._openmmlab_setup import require_openmmlab

    require_openmmlab("tools/train.py")
    try:
        runner = importlib.import_module("backbones.mm.runner")
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"tools/train.py: a .py config is an mmdet/mmseg config, run by backbones.mm.runner, which could not "
            f"be imported ({e}). YAML recipes (configs/cls/*.yaml) train classifiers without it."
        ) from e
    return runner.main(list(argv))


def _setup_logging(output: str, main: bool) -> list[logging.Handler]:
    _logger.setLevel(logging.INFO if main else logging.WARNING)
    _logger.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if main:
        handlers.append(logging.FileHandler(os.path.join(output, "train.log")))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        _logger.addHandler(h)
    return handlers


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


class _CheckpointState:
    """What timm's ``CheckpointSaver(task=...)`` saves: the weights, and the state an exact resume needs.

    ``pending`` is set (on rank 0) just before each save; it carries the counters and the gathered RNG states.
    """

    def __init__(self, model: nn.Module, model_ema: nn.Module | None, cfg: dict[str, Any], scheduler: Any) -> None:
        self.model, self.model_ema, self.cfg, self.scheduler = model, model_ema, cfg, scheduler
        self.pending: dict[str, Any] = {}

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = None) -> dict[str, Any]:
        from timm.utils import get_state_dict, unwrap_model

        unwrap_fn = unwrap_fn or unwrap_model
        if ema:
            return {} if self.model_ema is None else {"state_dict_ema": get_state_dict(self.model_ema, unwrap_fn)}
        train_state = dict(self.pending)
        if self.scheduler is not None:
            train_state["scheduler"] = self.scheduler.state_dict()
        if self.model_ema is not None and hasattr(self.model_ema, "_sr_generator"):
            train_state["ema_rng"] = self.model_ema._sr_generator.get_state()
        return {
            "state_dict": get_state_dict(self.model, unwrap_fn),
            "arch": self.cfg["model"],
            "args": self.cfg,
            "train_state": train_state,
        }


# ---------------------------------------------------------------------------------------------------------------
# training


def _optimizer(cfg: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg["opt_eps"] is not None:
        kwargs["eps"] = cfg["opt_eps"]
    if cfg["opt_betas"] is not None:
        kwargs["betas"] = tuple(cfg["opt_betas"])
    return create_optimizer_v2(
        model,
        opt=cfg["opt"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        momentum=cfg["momentum"],
        layer_decay=cfg["layer_decay"],
        **kwargs,
    )


def _scheduler(cfg: dict[str, Any], optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> tuple[Any, int]:
    from timm.scheduler import create_scheduler_v2

    kwargs = dict(
        sched=cfg["sched"],
        num_epochs=cfg["epochs"],
        decay_milestones=cfg["decay_milestones"],
        cooldown_epochs=cfg["cooldown_epochs"],
        decay_rate=cfg["decay_rate"],
        min_lr=cfg["min_lr"],
        warmup_lr=cfg["warmup_lr"],
        warmup_epochs=cfg["warmup_epochs"],
        warmup_prefix=cfg["warmup_prefix"],
        step_on_epochs=not cfg["sched_on_updates"],
        updates_per_epoch=updates_per_epoch,
    )
    if cfg["decay_epochs"] is not None:
        kwargs["decay_epochs"] = cfg["decay_epochs"]
    scheduler, num_epochs = create_scheduler_v2(optimizer, **kwargs)
    return scheduler, num_epochs


def _mixup(cfg: dict[str, Any], num_classes: int, prefetcher: bool) -> tuple[Any, Any]:
    """(collate_fn, mixup_fn): timm's FastCollateMixup with the prefetcher, else its Mixup on the batch."""
    if not (cfg["mixup"] > 0 or cfg["cutmix"] > 0 or cfg["cutmix_minmax"] is not None):
        return None, None
    from timm.data import FastCollateMixup, Mixup

    args = dict(
        mixup_alpha=cfg["mixup"],
        cutmix_alpha=cfg["cutmix"],
        cutmix_minmax=cfg["cutmix_minmax"],
        prob=cfg["mixup_prob"],
        switch_prob=cfg["mixup_switch_prob"],
        mode=cfg["mixup_mode"],
        label_smoothing=cfg["smoothing"],
        num_classes=num_classes,
    )
    return (FastCollateMixup(**args), None) if prefetcher else (None, Mixup(**args))


def _train_loss(cfg: dict[str, Any], mixup_active: bool) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()  # mixup already smooths the targets
    if cfg["smoothing"]:
        return LabelSmoothingCrossEntropy(smoothing=cfg["smoothing"])
    return nn.CrossEntropyLoss()


def _resolve_output(args: argparse.Namespace) -> str:
    if args.output:
        return args.output
    if args.resume and args.resume != "auto":
        return os.path.dirname(os.path.abspath(args.resume))
    return os.path.join("runs", os.path.splitext(os.path.basename(args.config))[0])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``tools/train.py`` with ``argv``; returns the final and best metrics (for tests and notebooks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.endswith(".py") and not a.startswith("-") and "=" not in a for a in argv):
        return _run_mm(argv)
    args = parse_args(argv)
    from backbones.engine import ConfigError, load_config

    try:
        cfg = load_config(args.config, list(args.set_) + list(args.overrides))
    except ConfigError as e:
        raise SystemExit(f"tools/train.py: {e}") from None
    ctx = init_distributed(cfg["device"])
    output = _resolve_output(args)
    if ctx.main:
        os.makedirs(output, exist_ok=True)
    if ctx.distributed:
        dist.barrier()
    handlers = _setup_logging(output, ctx.main)
    try:
        resume = args.resume
        if resume == "auto":
            resume = os.path.join(output, "last.pth.tar")
            resume = resume if os.path.exists(resume) else ""
        elif resume and not os.path.isfile(resume):
            raise SystemExit(f"tools/train.py: --resume {resume}: no such file")
        if ctx.main and not resume and os.path.exists(os.path.join(output, "last.pth.tar")):
            _logger.warning(f"{output} holds a previous run; starting afresh over it (--resume auto continues it)")
        return Trainer(cfg, ctx, output).run(resume)
    except ConfigError as e:
        raise SystemExit(f"tools/train.py: {e}") from None
    finally:
        for h in handlers:
            _logger.removeHandler(h)
            h.close()
        if ctx.owns_group:
            dist.destroy_process_group()


class Trainer:
    """One training run: built from the recipe, optionally resumed, then ``run()`` epoch by epoch."""

    def __init__(self, cfg: dict[str, Any], ctx: Dist, output: str) -> None:
        from timm.layers import convert_sync_batchnorm
        from timm.utils import ModelEmaV3, NativeScaler

        from backbones.engine import (
            ConfigError,
            autocast_context,
            build_dataset,
            build_loader,
            build_model,
            data_config,
            dataset_num_classes,
            progress_enabled,
            use_prefetcher,
        )

        self.cfg, self.ctx, self.output, self.device = cfg, ctx, output, ctx.device
        self.cfg_dict = cfg.to_dict()
        device = self.device
        if cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])

        # Identical model on every rank: seed before building, per-rank streams afterwards.
        seed_all(cfg["seed"])
        self.dataset_train = build_dataset(cfg, cfg["train_split"], is_training=True)
        self.dataset_eval = build_dataset(cfg, cfg["val_split"])
        self.num_classes = cfg["num_classes"] or dataset_num_classes(self.dataset_train)
        if self.num_classes is None:
            raise ConfigError("num_classes is not set and the dataset does not tell it; set num_classes")
        model = build_model(cfg, num_classes=self.num_classes)
        if cfg["sync_bn"] and ctx.distributed:
            model = convert_sync_batchnorm(model)
        model.to(device)
        self.data_cfg = data_config(cfg, model)
        self.prefetcher = use_prefetcher(cfg, device)
        self.amp = autocast_context(cfg, device)
        self.loss_scaler = None
        if cfg["amp"] and cfg["amp_dtype"] in ("float16", "fp16"):
            self.loss_scaler = NativeScaler(device=device.type)

        self.optimizer = _optimizer(cfg, model)
        self.model_ema = None
        if cfg["model_ema"]:  # before DDP wraps the model, like timm
            self.model_ema = ModelEmaV3(
                model, decay=cfg["model_ema_decay"], use_warmup=cfg["model_ema_warmup"], device=device
            )
        self.collate_fn, self.mixup_fn = _mixup(cfg, self.num_classes, self.prefetcher)
        self.loader_train = build_loader(
            cfg, self.dataset_train, self.data_cfg, device, True, ctx.distributed, collate_fn=self.collate_fn
        )
        self.loader_eval = build_loader(cfg, self.dataset_eval, self.data_cfg, device, False, ctx.distributed)
        self.updates_per_epoch = len(self.loader_train)
        if cfg["steps_per_epoch"] > 0:
            self.updates_per_epoch = min(self.updates_per_epoch, cfg["steps_per_epoch"])
        if self.updates_per_epoch == 0:
            raise ConfigError(
                f"batch_size {cfg['batch_size']} x {ctx.world_size} process(es) is larger than the "
                f"{len(self.dataset_train)} training images: no full batch"
            )
        self.scheduler, self.num_epochs = _scheduler(cfg, self.optimizer, self.updates_per_epoch)
        mixup_active = self.mixup_fn is not None or self.collate_fn is not None
        self.train_loss_fn = _train_loss(cfg, mixup_active).to(device)

        self.model_without_ddp = self.model = model
        if ctx.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.disable_bar = progress_enabled(cfg["progress"], ctx.rank)

        # position: the next epoch to run, batches of it already done, optimiser updates done
        self.start_epoch, self.skip_batches, self.num_updates = 0, 0, 0
        self.resumed_loss = (0.0, 0)
        self.resume_rng: dict[str, Any] | None = None  # this rank's RNG where the run continues
        self.epoch_start_rng: dict[str, Any] | None = None  # ... and where that epoch started (mid-epoch resume)
        self.saver = self.state = self.metrics_log = self.steps_log = None

    # ---- resume

    def resume(self, path: str) -> dict[str, Any] | None:
        """Load a checkpoint; returns the saver's bookkeeping when it was written into this output folder."""
        from timm.utils import NativeScaler

        from backbones._weights import load_checkpoint_file
        from backbones.engine import schedule_keys_changed

        ckpt = load_checkpoint_file(path)  # names the file when it is empty or cut short
        self.model_without_ddp.load_state_dict(ckpt["state_dict"])
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.model_ema is not None:
            if "state_dict_ema" in ckpt:
                self.model_ema.module.load_state_dict(ckpt["state_dict_ema"])
            else:
                _logger.warning(f"{path} has no EMA weights; the EMA restarts from the model's")
        if self.loss_scaler is not None and NativeScaler.state_dict_key in ckpt:
            self.loss_scaler.load_state_dict(ckpt[NativeScaler.state_dict_key])
        ts = ckpt.get("train_state")
        if ts is None:  # a checkpoint of timm's train.py: weights, optimiser and epoch only
            self.start_epoch = ckpt.get("epoch", -1) + 1
            self.num_updates = self.start_epoch * self.updates_per_epoch
            _logger.warning(f"{path} holds no RNG / scheduler state (not written by this tool): resume is not exact")
        else:
            changed = schedule_keys_changed(ckpt.get("args", {}), self.cfg_dict)
            if changed:
                _logger.warning(f"the recipe differs from the checkpoint's in {changed}: the recipe's schedule is used")
            elif "scheduler" in ts and self.scheduler is not None:
                self.scheduler.load_state_dict(ts["scheduler"])
            if ts["end_of_epoch"]:
                self.start_epoch = ts["epoch"] + 1
            else:
                self.start_epoch, self.skip_batches = ts["epoch"], ts["batch_idx"] + 1
                self.resumed_loss = (ts["loss_sum"], ts["loss_count"])
            self.num_updates = ts["num_updates"]
            if ts.get("world_size") == self.ctx.world_size:
                self.resume_rng = ts["rng"][self.ctx.rank]
                if not ts["end_of_epoch"]:
                    self.epoch_start_rng = ts["rng_epoch_start"][self.ctx.rank]
            else:
                _logger.warning(
                    f"{path} was written by {ts.get('world_size')} process(es), this run has {self.ctx.world_size}: "
                    "the RNG streams restart from the seed (the data order is unchanged)"
                )
                seed_all(self.cfg["seed"] + 1000 * self.start_epoch + self.ctx.rank)
            if self.model_ema is not None and "ema_rng" in ts and hasattr(self.model_ema, "_sr_generator"):
                self.model_ema._sr_generator.set_state(ts["ema_rng"])
        _logger.info(
            f"resumed {path}: epoch {self.start_epoch}, batch {self.skip_batches}, {self.num_updates} updates done"
        )
        same_dir = os.path.dirname(os.path.abspath(path)) == os.path.abspath(self.output)
        return ckpt.get("saver") if same_dir else None

    # ---- bookkeeping (rank 0)

    def _open_logs(self, resumed: bool, saver_state: dict[str, Any] | None) -> None:
        from timm.utils import CheckpointSaver

        with open(os.path.join(self.output, "config.yaml"), "w") as f:
            yaml.safe_dump(self.cfg_dict, f, sort_keys=False)
        self.state = _CheckpointState(self.model, self.model_ema, self.cfg_dict, self.scheduler)
        self.saver = CheckpointSaver(
            self.model,
            self.optimizer,
            model_ema=self.model_ema,
            amp_scaler=self.loss_scaler,
            checkpoint_dir=self.output,
            recovery_dir=self.output,
            decreasing=self.cfg["eval_metric"] == "loss",
            max_history=self.cfg["checkpoint_hist"],
            task=self.state,
        )
        if saver_state is not None:
            self.saver.load_state_dict(saver_state)
        fields = METRIC_FIELDS + (EMA_FIELDS if self.model_ema is not None else [])
        done_epochs, done_updates = self.start_epoch, self.num_updates
        self.metrics_log = CsvLog(os.path.join(self.output, "metrics.csv"), fields,
                                   keep=(lambda r: int(r["epoch"]) < done_epochs) if resumed else None)
        self.steps_log = CsvLog(os.path.join(self.output, "steps.csv"), STEP_FIELDS,
                                 keep=(lambda r: int(r["step"]) <= done_updates) if resumed else None)
        n_params = sum(p.numel() for p in self.model_without_ddp.parameters())
        _logger.info(
            f"{self.cfg['model']}: {n_params / 1e6:.3f}M parameters, {self.num_classes} classes, input "
            f"{self.data_cfg['input_size']}; {len(self.dataset_train)} train / {len(self.dataset_eval)} eval images; "
            f"{self.ctx.world_size} process(es) x batch {self.cfg['batch_size']}, {self.updates_per_epoch} updates "
            f"per epoch, {self.num_epochs} epochs on {self.device}; output {self.output}"
        )

    def _prepare_save(self, epoch: int, end_of_epoch: bool, batch_idx: int, epoch_rng: list[Any],
                      loss: tuple[float, int]) -> bool:
        """Gather every rank's RNG state (all ranks call this); True on rank 0, which then saves."""
        rng = gather(rng_state(self.device), self.ctx)
        if self.state is None:
            return False
        self.state.pending = dict(
            epoch=epoch,
            end_of_epoch=end_of_epoch,
            batch_idx=batch_idx,
            num_updates=self.num_updates,
            world_size=self.ctx.world_size,
            rng=rng,
            rng_epoch_start=epoch_rng,
            loss_sum=loss[0],
            loss_count=loss[1],
        )
        return True

    # ---- training

    def train_epoch(self, epoch: int) -> float:
        """One epoch (or what is left of it after a mid-epoch resume); returns the mean training loss."""
        from timm.utils import dispatch_clip_grad
        from tqdm import tqdm

        cfg, ctx, device = self.cfg, self.ctx, self.device
        set_sampler_epoch(self.loader_train, epoch, cfg["seed"])
        mixup_off = cfg["mixup_off_epoch"] and epoch >= cfg["mixup_off_epoch"]
        for mixer in (self.mixup_fn, self.collate_fn):
            if mixer is not None and mixup_off:
                mixer.mixup_enabled = False
        skip = self.skip_batches
        if self.epoch_start_rng is not None:  # mid-epoch resume: replay this epoch's loading from its start
            set_rng_state(self.epoch_start_rng, device)
        epoch_rng = gather(rng_state(device), ctx) if cfg["recovery_interval"] > 0 else []
        self.model.train()
        batches = iter(self.loader_train)
        for _ in range(skip):
            next(batches)
        if self.epoch_start_rng is not None:
            set_rng_state(self.resume_rng, device)
            self.epoch_start_rng = None
        loss_sum, loss_count = self.resumed_loss if skip else (0.0, 0)
        self.skip_batches, self.resumed_loss = 0, (0.0, 0)
        step_rows: list[dict[str, Any]] = []
        bar = tqdm(total=self.updates_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{self.num_epochs}",
                   disable=self.disable_bar, dynamic_ncols=True, leave=False)
        batches = itertools.islice(batches, self.updates_per_epoch - skip)
        for batch_idx, (images, targets) in enumerate(batches, start=skip):
            if not self.prefetcher:
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                if self.mixup_fn is not None:
                    images, targets = self.mixup_fn(images, targets)
            with self.amp:
                loss = add_auxiliary_loss(self.model_without_ddp, self.train_loss_fn(self.model(images), targets))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, batch {batch_idx}: stopping")
            self.optimizer.zero_grad(set_to_none=True)
            params = self.model_without_ddp.parameters()
            if self.loss_scaler is not None:
                self.loss_scaler(loss, self.optimizer, clip_grad=cfg["clip_grad"], clip_mode=cfg["clip_mode"],
                                 parameters=params)
            else:
                loss.backward()
                if cfg["clip_grad"] is not None:
                    dispatch_clip_grad(params, cfg["clip_grad"], mode=cfg["clip_mode"])
                self.optimizer.step()
            self.num_updates += 1
            if self.model_ema is not None:
                self.model_ema.update(self.model_without_ddp, step=self.num_updates)
            loss_value = loss.detach().float()
            if ctx.distributed:  # the global batch's loss, as one process with the whole batch would see it
                dist.all_reduce(loss_value)
                loss_value /= ctx.world_size
            loss_item = loss_value.item()
            loss_sum, loss_count = loss_sum + loss_item, loss_count + 1
            lr = max(group["lr"] for group in self.optimizer.param_groups)
            step_rows.append(dict(epoch=epoch, step=self.num_updates, batch=batch_idx, loss=loss_item, lr=lr))
            if self.scheduler is not None:
                self.scheduler.step_update(num_updates=self.num_updates, metric=loss_sum / loss_count)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", lr=f"{lr:.2e}", refresh=False)
            if self.disable_bar and ctx.main and (batch_idx + 1) % cfg["log_interval"] == 0:
                _logger.info(f"epoch {epoch} [{batch_idx + 1}/{self.updates_per_epoch}] loss {loss_item:.4f} "
                             f"(avg {loss_sum / loss_count:.4f}) lr {lr:.3e}")
            if cfg["recovery_interval"] > 0 and (batch_idx + 1) % cfg["recovery_interval"] == 0:
                if self.steps_log is not None:
                    self.steps_log.append(step_rows)
                    step_rows = []
                if self._prepare_save(epoch, False, batch_idx, epoch_rng, (loss_sum, loss_count)):
                    self.saver.save_recovery(epoch, batch_idx=batch_idx)
        bar.close()
        if self.steps_log is not None:
            self.steps_log.append(step_rows)
        return loss_sum / max(loss_count, 1)

    def run(self, resume: str = "") -> dict[str, Any]:
        from backbones.engine import evaluate

        ctx, cfg = self.ctx, self.cfg
        saver_state = self.resume(resume) if resume else None
        if self.scheduler is not None:  # timm's schedulers are functions of the epoch / update counter
            self.scheduler.step(self.start_epoch)
            self.scheduler.step_update(self.num_updates)
        if ctx.main:
            self._open_logs(bool(resume), saver_state)
        # per-rank RNG streams; a resumed run takes them from the checkpoint (at once, or in train_epoch)
        if not resume:
            seed_all(cfg["seed"] + ctx.rank)
        elif self.resume_rng is not None and self.epoch_start_rng is None:
            set_rng_state(self.resume_rng, self.device)

        eval_key = cfg["eval_metric"]
        best: tuple[Any, Any] = (None, None)
        last_eval: dict[str, float] = {}
        t_start = time.time()
        for epoch in range(self.start_epoch, self.num_epochs):
            t_epoch = time.time()
            train_loss = self.train_epoch(epoch)
            last_eval = evaluate(self.model_without_ddp, self.loader_eval, self.device, self.amp,
                                 f"eval {epoch + 1}", self.disable_bar)
            row = dict(epoch=epoch, train_loss=train_loss, eval_loss=last_eval["loss"], top1=last_eval["top1"],
                       top5=last_eval["top5"], lr=max(group["lr"] for group in self.optimizer.param_groups))
            metric = last_eval[eval_key]
            if self.model_ema is not None:
                ema = evaluate(self.model_ema.module, self.loader_eval, self.device, self.amp, "eval EMA",
                               self.disable_bar)
                row.update(ema_eval_loss=ema["loss"], ema_top1=ema["top1"], ema_top5=ema["top5"])
                metric = ema[eval_key]  # like timm: with an EMA, the EMA weights rank the checkpoints
            row["time"] = round(time.time() - t_epoch, 3)
            if self._prepare_save(epoch, True, self.updates_per_epoch - 1, [], (0.0, 0)):
                best = self.saver.save_checkpoint(epoch, metric=metric)
                self.metrics_log.append([row])
                plot_metrics(self.metrics_log.read(), os.path.join(self.output, "metrics.png"), title=cfg["model"])
                ema_note = f", EMA top-1 {row['ema_top1']:.2f}" if self.model_ema is not None else ""
                _logger.info(
                    f"epoch {epoch + 1}/{self.num_epochs}: train loss {row['train_loss']:.4f}, eval loss "
                    f"{row['eval_loss']:.4f}, top-1 {row['top1']:.2f}, top-5 {row['top5']:.2f}{ema_note}, "
                    f"lr {row['lr']:.3e}, {row['time']:.1f}s"
                )
            if self.scheduler is not None:
                self.scheduler.step(epoch + 1, metric)

        wall = time.time() - t_start
        result = {"output": self.output, "epochs": self.num_epochs, "wall_time": wall, "last": last_eval}
        if ctx.main:
            result.update(best_metric=best[0], best_epoch=best[1], eval_metric=eval_key)
            if best[0] is not None:
                _logger.info(f"done in {wall:.1f}s: best {eval_key} {best[0]:.4f} at epoch {best[1]}; checkpoints "
                             f"in {self.output} (model_best.pth.tar, last.pth.tar)")
        return result


if __name__ == "__main__":
    main()
