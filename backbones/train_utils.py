"""Plumbing of ``tools/train.py``: process group and launch environment, RNG state for exact resume, the sampler's
epoch order, and the CSV / PNG logs."""

from __future__ import annotations

import csv
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "CsvLog", "Dist", "add_auxiliary_loss", "gather", "init_distributed", "launch_env", "plot_metrics", "rng_state",
    "seed_all", "set_rng_state", "set_sampler_epoch",
]


# ---------------------------------------------------------------------------------------------------------------
# model-defined loss terms


def add_auxiliary_loss(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """``loss`` plus the model's own training term of its latest forward, where it defines one.

    MoH models (:class:`backbones.blocks.HeadMixture` inside, e.g. ``moh_transnext_*``): ``moh_aux_loss()``, the mean
    load-balancing loss of the routed attentions, times ``moh_aux_loss_weight`` (0.01, the official recipe).
    ``model`` is the bare model (not a DDP wrapper); models without the method, or without routed heads, pass
    ``loss`` through unchanged.
    """
    aux_fn = getattr(model, "moh_aux_loss", None)
    aux = aux_fn() if callable(aux_fn) else None
    if aux is None:
        return loss
    return loss + model.moh_aux_loss_weight * aux.to(loss.dtype)


# ---------------------------------------------------------------------------------------------------------------
# distributed


class Dist:
    """Where this process stands: rank, world size, local rank, device; ``owns_group`` if we initialised it."""

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device, owns_group: bool):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device, self.owns_group = device, owns_group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables, else slurm's, else a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise SystemExit(
                f"tools/train.py: running as one of {env['SLURM_NTASKS']} slurm tasks, but {', '.join(missing)} "
                "is not set; export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) and "
                "MASTER_PORT=29500 in the batch script (or launch with torchrun)"
            )
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init_distributed(device_name: str) -> Dist:
    from .engine import resolve_device

    rank, world_size, local_rank = launch_env()
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
        owns_group = True
    return Dist(rank, world_size, local_rank, device, owns_group)


def gather(obj: Any, ctx: Dist) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------------------------
# RNG state (plain tuples and tensors, so checkpoints load with torch.load(weights_only=True))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def set_sampler_epoch(loader: Any, epoch: int, seed: int) -> None:
    """Order the epoch's samples by ``randperm(len, seed + epoch)``.

    torch's DistributedSampler draws exactly that permutation and gives rank r the elements r, r + W, ...; a single
    process gets a RandomSampler whose generator is seeded the same way, so its batch k of N*B samples is the union
    of the N ranks' batches k of B samples.
    """
    sampler = loader.sampler
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.seed = seed
        sampler.set_epoch(epoch)
    elif isinstance(sampler, torch.utils.data.RandomSampler):
        sampler.generator = torch.Generator().manual_seed(seed + epoch)


# ---------------------------------------------------------------------------------------------------------------
# logs


class CsvLog:
    """A CSV file written row by row; on resume, rows past the resume point are dropped first."""

    def __init__(self, path: str, fields: list[str], keep: Any = None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep is not None and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if keep(r)]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerows(rows)

    def read(self) -> list[dict[str, str]]:
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def plot_metrics(rows: list[dict[str, str]], path: str, title: str = "") -> None:
    """Loss (train, eval) and accuracy (top-1, top-5) per epoch, as a PNG (matplotlib's Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def column(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]

    epochs = column("epoch")
    fig = Figure(figsize=(10, 4), tight_layout=True)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("eval_loss", "eval"), ("ema_eval_loss", "eval (EMA)")):
        if rows and key in rows[0]:
            ax_loss.plot(epochs, column(key), marker=".", label=label)
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("ema_top1", "top-1 (EMA)")):
        if rows and key in rows[0]:
            ax_acc.plot(epochs, column(key), marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="held-out accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
