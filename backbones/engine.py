"""Classification recipes: the YAML config schema, and the builders and evaluation loop shared by the tools.

``tools/train.py`` and ``tools/validate.py`` read a recipe (``configs/cls/*.yaml``) whose keys are named like the
arguments of timm's ``train.py`` (``model``, ``lr``, ``sched``, ``mixup``, ...; see :data:`DEFAULTS`). A recipe may
inherit others with ``_base_: base.yaml`` (a path relative to the recipe, or a list; later files and the recipe
itself win; mappings merge key by key unless they hold ``_delete_: true``). Overrides on the command line
(``lr=0.1``, ``model_kwargs.depths=[1,1,1,1]``) are parsed as YAML values. Unknown keys and values of the wrong
type are errors that name the key.

Everything else is timm's: ``timm.create_model``, ``resolve_data_config``, ``create_loader``, ``create_transform``.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

__all__ = [
    "DEFAULTS",
    "Recipe",
    "ConfigError",
    "load_config",
    "apply_overrides",
    "build_model",
    "build_dataset",
    "build_loader",
    "resolve_device",
    "autocast_context",
    "evaluate",
]

# Every key a recipe may set, with its default. Names follow timm's train.py arguments (dashes -> underscores).
DEFAULTS: dict[str, Any] = {
    # model
    "model": "",  # any timm name; ``import backbones`` registers this repository's models with timm
    "model_kwargs": {},  # extra constructor arguments (embed_dim=, depths=, img_size=, ...)
    "pretrained": False,
    "initial_checkpoint": "",  # weights loaded with backbones.load_checkpoint before training
    "num_classes": None,  # None: the dataset's number of classes
    "in_chans": None,
    "drop": None,  # classifier dropout (drop_rate)
    "drop_path": None,  # stochastic depth rate (drop_path_rate)
    "sync_bn": False,
    # data
    "dataset": "",  # '' = ImageFolder under data_dir; 'digits' = scikit-learn's digits; any timm dataset name
    "data_dir": "",
    "dataset_kwargs": {},  # extra dataset arguments (digits: image_size, val_fraction, seed)
    "train_split": "train",
    "val_split": "val",
    "img_size": None,
    "input_size": None,  # [C, H, W]; overrides img_size
    "crop_pct": None,
    "crop_mode": None,
    "mean": None,
    "std": None,
    "interpolation": "",
    "batch_size": 128,  # per process
    "validation_batch_size": None,  # per process; None = batch_size
    "workers": 4,
    "pin_mem": False,
    "no_prefetcher": False,  # timm's prefetcher (uint8 batches normalised on the device) is used on CUDA only
    # augmentation and regularisation
    "no_aug": False,
    "scale": [0.08, 1.0],
    "ratio": [0.75, 1.3333333333333333],
    "hflip": 0.5,
    "vflip": 0.0,
    "color_jitter": 0.4,
    "aa": None,  # timm auto-augment string, e.g. rand-m9-mstd0.5-inc1
    "train_interpolation": "random",
    "reprob": 0.0,
    "remode": "pixel",
    "recount": 1,
    "mixup": 0.0,
    "cutmix": 0.0,
    "cutmix_minmax": None,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "mixup_mode": "batch",
    "mixup_off_epoch": 0,
    "smoothing": 0.1,
    # optimiser
    "opt": "sgd",
    "opt_eps": None,
    "opt_betas": None,
    "momentum": 0.9,
    "weight_decay": 2e-5,
    "layer_decay": None,
    "clip_grad": None,
    "clip_mode": "norm",
    "lr": 0.1,  # not scaled by batch size: the value given is used
    # schedule
    "sched": "cosine",
    "sched_on_updates": False,  # step the schedule every optimiser update instead of every epoch
    "epochs": 300,
    "warmup_epochs": 0,
    "warmup_lr": 1e-5,
    "warmup_prefix": False,
    "min_lr": 0.0,
    "cooldown_epochs": 0,
    "decay_epochs": None,
    "decay_milestones": [90, 180, 270],
    "decay_rate": 0.1,
    "steps_per_epoch": 0,  # > 0: stop each epoch after this many updates (smoke tests)
    # model EMA
    "model_ema": False,
    "model_ema_decay": 0.9998,
    "model_ema_warmup": False,
    # precision and device
    "amp": False,
    "amp_dtype": "bfloat16",  # bfloat16 (CPU, CUDA) or float16 (CUDA; uses a gradient scaler)
    "device": "auto",  # auto = cuda when available, else cpu
    "threads": 0,  # > 0: torch.set_num_threads (CPU); 0 keeps torch's default (one per core)
    # bookkeeping
    "seed": 42,
    "log_interval": 50,
    "checkpoint_hist": 10,
    "recovery_interval": 0,  # > 0: also save recovery-EPOCH-STEP.pth.tar every N updates (mid-epoch resume)
    "eval_metric": "top1",  # top1, top5 or loss: ranks checkpoints and picks model_best
    "progress": None,  # tqdm bar on rank 0: None = when stderr is a terminal, True / False to force
}

_SCHEDULE_KEYS = (
    "sched", "sched_on_updates", "epochs", "warmup_epochs", "warmup_lr", "warmup_prefix", "min_lr",
    "cooldown_epochs", "decay_epochs", "decay_milestones", "decay_rate", "steps_per_epoch", "lr", "batch_size",
)


class ConfigError(ValueError):
    """A recipe that cannot be used: unknown key, wrong type, missing file."""


class Recipe(dict):
    """A resolved recipe: a dict with attribute access (``cfg.lr``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self))


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and v.get("_delete_"):  # mmengine's marker: replace the inherited mapping
            out[k] = {kk: copy.deepcopy(vv) for kk, vv in v.items() if kk != "_delete_"}
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"recipe {path} inherits itself via _base_: {' -> '.join(seen + (path,))}")
    if not os.path.isfile(path):
        raise ConfigError(f"recipe file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping of keys to values, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, _read_yaml(os.path.join(os.path.dirname(path), base), seen + (path,)))
    return _merge(merged, data)


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(DEFAULTS), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown recipe key {key!r}{hint} (the keys are listed in backbones.engine.DEFAULTS)")


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; YAML reads 1e-3 as a string, so numbers are parsed here."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"recipe key {key!r} must be true or false, got {value!r}")
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value) if isinstance(default, float) or any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise ConfigError(f"recipe key {key!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"recipe key {key!r} must be a number, got {value!r}")
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"recipe key {key!r} must be an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"recipe key {key!r} must be a string, got {value!r}")
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"recipe key {key!r} must be a mapping (key: value), got {value!r}")
    if isinstance(default, list) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"recipe key {key!r} must be a list, got {value!r}")
    return value


def _parse_value(text: str) -> Any:
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)  # 1e-3, which YAML 1.1 leaves a string
    return value


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings; ``a.b=value`` sets key ``b`` inside the mapping ``a`` (e.g. model_kwargs)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        if path[0] not in DEFAULTS:
            raise _unknown_key(path[0], f"override {item!r}")
        target = cfg
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[path[-1]] = _parse_value(text)
    return cfg


def load_config(path: str, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe (with its ``_base_`` files), apply ``key=value`` overrides, fill defaults and check it."""
    data = _read_yaml(path)
    for key in data:
        if key not in DEFAULTS:
            raise _unknown_key(key, path)
    data = apply_overrides(data, overrides)
    cfg = Recipe(_merge(DEFAULTS, data))
    for key, default in DEFAULTS.items():
        cfg[key] = _coerce(key, cfg[key], default)
    if not cfg.model:
        raise ConfigError(f"{path}: the recipe names no model (set model: <timm name>)")
    if cfg.eval_metric not in ("top1", "top5", "loss"):
        raise ConfigError(f"eval_metric must be top1, top5 or loss, got {cfg.eval_metric!r}")
    if cfg.amp_dtype not in ("bfloat16", "float16", "bf16", "fp16"):
        raise ConfigError(f"amp_dtype must be bfloat16 or float16, got {cfg.amp_dtype!r}")
    if cfg.input_size is not None and len(cfg.input_size) != 3:
        raise ConfigError(f"input_size is [C, H, W], got {cfg.input_size!r}")
    return cfg


def schedule_keys_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Schedule-defining keys whose value differs between two recipes (``{key: (old, new)}``)."""
    return {k: (old.get(k), new.get(k)) for k in _SCHEDULE_KEYS if old.get(k) != new.get(k)}


# ---------------------------------------------------------------------------------------------------------------
# builders


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda was asked for, but torch.cuda.is_available() is False")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
    return device


def autocast_context(cfg: Mapping[str, Any], device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the recipe's ``amp``/``amp_dtype`` (bf16 on CPU; fp16 or bf16 on CUDA), else a no-op."""
    if not cfg["amp"]:
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg["amp_dtype"] in ("float16", "fp16") else torch.bfloat16
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("amp_dtype float16 needs CUDA; use amp_dtype: bfloat16 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_dataset(cfg: Mapping[str, Any], split: str, is_training: bool = False) -> Any:
    """The dataset for ``split`` (``train_split`` / ``val_split`` of the recipe)."""
    from backbones.data import create_dataset

    return create_dataset(
        cfg["dataset"], root=cfg["data_dir"], split=split, is_training=is_training, **cfg["dataset_kwargs"]
    )


def dataset_num_classes(dataset: Any) -> int | None:
    """Number of classes of a dataset built by :func:`build_dataset`, when it can be told."""
    if getattr(dataset, "num_classes", None):
        return int(dataset.num_classes)
    reader = getattr(dataset, "reader", None)
    class_to_idx = getattr(reader, "class_to_idx", None)
    return len(class_to_idx) if class_to_idx else None


def build_model(cfg: Mapping[str, Any], num_classes: int | None = None) -> nn.Module:
    """``timm.create_model`` for the recipe; the name must be known to timm (ours are registered by
    ``import backbones``)."""
    import timm

    import backbones  # noqa: F401  (registers this repository's models)

    name = cfg["model"]
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}: neither timm nor backbones registers it{hint}")
    kwargs = dict(cfg["model_kwargs"])
    for key, arg in (("drop", "drop_rate"), ("drop_path", "drop_path_rate"), ("in_chans", "in_chans")):
        if cfg[key] is not None:
            kwargs.setdefault(arg, cfg[key])
    num_classes = cfg["num_classes"] or num_classes
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=cfg["pretrained"], **kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r} does not take the arguments {sorted(kwargs)}: {e}") from e
    if cfg["initial_checkpoint"]:
        from backbones import load_checkpoint

        load_checkpoint(model, cfg["initial_checkpoint"])
    return model


def data_config(cfg: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """timm's ``resolve_data_config`` from the recipe's size / normalisation keys and the model's defaults."""
    from timm.data import resolve_data_config

    args = {k: cfg[k] for k in ("input_size", "img_size", "in_chans", "crop_pct", "crop_mode", "mean", "std")}
    args["interpolation"] = cfg["interpolation"]
    return resolve_data_config(args, model=model)


def use_prefetcher(cfg: Mapping[str, Any], device: torch.device) -> bool:
    return device.type == "cuda" and not cfg["no_prefetcher"]


def build_loader(
    cfg: Mapping[str, Any],
    dataset: Any,
    data_cfg: Mapping[str, Any],
    device: torch.device,
    is_training: bool,
    distributed: bool,
    collate_fn: Any = None,
) -> Any:
    """timm's ``create_loader``: train transforms and a shuffling sampler for training, the eval transform and an
    ordered sampler otherwise. Workers are not persistent, so a resumed run reseeds them exactly as the original."""
    from timm.data import create_loader

    common = dict(
        input_size=data_cfg["input_size"],
        interpolation=data_cfg["interpolation"],
        mean=data_cfg["mean"],
        std=data_cfg["std"],
        num_workers=cfg["workers"],
        distributed=distributed,
        pin_memory=cfg["pin_mem"],
        device=device,
        use_prefetcher=use_prefetcher(cfg, device),
        persistent_workers=False,
    )
    if not is_training:
        return create_loader(
            dataset,
            batch_size=cfg["validation_batch_size"] or cfg["batch_size"],
            is_training=False,
            crop_pct=data_cfg["crop_pct"],
            crop_mode=data_cfg.get("crop_mode"),
            **common,
        )
    if cfg["train_interpolation"]:
        common["interpolation"] = cfg["train_interpolation"]
    return create_loader(
        dataset,
        batch_size=cfg["batch_size"],
        is_training=True,
        no_aug=cfg["no_aug"],
        re_prob=cfg["reprob"],
        re_mode=cfg["remode"],
        re_count=cfg["recount"],
        scale=tuple(cfg["scale"]) if cfg["scale"] else None,
        ratio=tuple(cfg["ratio"]) if cfg["ratio"] else None,
        hflip=cfg["hflip"],
        vflip=cfg["vflip"],
        color_jitter=cfg["color_jitter"],
        auto_augment=cfg["aa"],
        collate_fn=collate_fn,
        **common,
    )


# ---------------------------------------------------------------------------------------------------------------
# evaluation


def progress_enabled(cfg_progress: Any, rank: int = 0) -> bool | None:
    """tqdm's ``disable`` argument: always off off rank 0; None lets tqdm decide (off when not a terminal)."""
    if rank != 0 or cfg_progress is False:
        return True
    return False if cfg_progress else None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    amp: contextlib.AbstractContextManager | None = None,
    desc: str = "eval",
    disable_progress: bool | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over the loader's dataset.

    Under ``torch.distributed`` each process evaluates its shard and the sums are all-reduced; the samples an ordered
    distributed sampler repeats to even out the shards are left out, so the figures are those of one process.
    """
    from tqdm import tqdm

    model.eval()
    sampler = getattr(loader, "sampler", None)
    valid = getattr(sampler, "num_valid_samples", None)
    if valid is None:
        valid = len(sampler) if sampler is not None and hasattr(sampler, "__len__") else math.inf
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, samples
    seen = 0
    for images, targets in tqdm(loader, desc=desc, disable=disable_progress, leave=False, dynamic_ncols=True):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with amp or contextlib.nullcontext():
            logits = model(images)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        keep = int(min(len(targets), max(0, valid - seen)))
        seen += len(targets)
        logits, targets = logits[:keep].float(), targets[:keep]
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(targets[:, None])
        sums += torch.stack([
            F.cross_entropy(logits, targets, reduction="sum").double(),
            hits[:, 0].sum().double(),
            hits.any(dim=1).sum().double(),
            torch.tensor(float(keep), dtype=torch.float64, device=device),
        ])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "count": int(n)}
