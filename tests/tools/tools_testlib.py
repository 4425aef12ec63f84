"""Helpers for the tools' tests: load tools/*.py as modules, write small recipes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# A recipe that trains timm's test_resnet (0.37M parameters) on 32x32 digits: one epoch takes a few seconds
# on one core and reaches ~90% held-out top-1.
TINY_RECIPE: dict[str, Any] = dict(
    model="test_resnet",
    dataset="digits",
    dataset_kwargs={"image_size": 32},
    img_size=32,
    crop_pct=1.0,
    mean=[0.5, 0.5, 0.5],
    std=[0.5, 0.5, 0.5],
    interpolation="bilinear",
    train_interpolation="bilinear",
    batch_size=32,
    validation_batch_size=120,
    workers=0,
    hflip=0.0,
    scale=[0.7, 1.0],
    color_jitter=0.2,
    opt="adamw",
    lr=3e-3,
    weight_decay=0.05,
    sched="cosine",
    sched_on_updates=True,
    epochs=1,
    warmup_epochs=0,
    seed=0,
    log_interval=1000,
    checkpoint_hist=3,
)


def load_tool(name: str) -> Any:
    """Import tools/<name>.py as a module (the tools are scripts, not a package)."""
    path = ROOT / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_recipe(path: Path, **overrides: Any) -> str:
    recipe = dict(TINY_RECIPE, **overrides)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(key, None)
    return env
