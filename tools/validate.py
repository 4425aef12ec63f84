#!/usr/bin/env python3
"""Evaluate a checkpoint on a recipe's held-out split: top-1, top-5 and cross-entropy.

    python tools/validate.py configs/cls/digits_focalnet_nano.yaml --checkpoint runs/demo/model_best.pth.tar
    python tools/validate.py RECIPE.yaml --checkpoint CKPT --split test --use-ema
    python tools/validate.py RECIPE.yaml --checkpoint focalnet_tiny_srf.pth model_kwargs.focal_levels=3

The model is built from the recipe (same name, kwargs, input size and eval transform as training) and the weights
are loaded with ``backbones.load_checkpoint`` (ours, timm's or an official release; wrappers and prefixes removed,
the family's key filter applied). ``--use-ema`` picks ``state_dict_ema``; by default it is used when the recipe
trained with ``model_ema`` and the checkpoint has it (those are the weights that ranked model_best).
``--split val`` is the recipe's ``val_split``, ``train`` its ``train_split``; any other name is passed to the dataset
(``test`` for digits is the same held-out 20%: the set has no third part).

The figures are printed and written as JSON next to the checkpoint (``<checkpoint stem>_<split>[_ema].json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/validate.py", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="the recipe (.yaml) the checkpoint was trained with")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, values parsed as YAML")
    parser.add_argument("--set", dest="set_", action="append", default=[], metavar="key=value")
    parser.add_argument("--checkpoint", "-c", required=True, help="checkpoint file (.pth, .pth.tar, .safetensors)")
    parser.add_argument("--split", default="val", help="val (default), test, train or a dataset split name")
    parser.add_argument("--use-ema", action=argparse.BooleanOptionalAction, default=None,
                        help="evaluate state_dict_ema (default: when the recipe trained an EMA and it is saved)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's validation batch size")
    parser.add_argument("--json", default="", help="where to write the figures (default: next to the checkpoint)")
    return parser.parse_intermixed_args(argv)


def _split_name(cfg: dict[str, Any], split: str) -> str:
    return {"val": cfg["val_split"], "train": cfg["train_split"]}.get(split, split)


def _select_weights(checkpoint: Any, use_ema: bool | None, model_ema: bool, path: str) -> tuple[Any, bool]:
    """The state dict to load, and whether it is the EMA's. A file that is not a training checkpoint is passed on."""
    if not isinstance(checkpoint, dict) or not any(k in checkpoint for k in ("state_dict", "state_dict_ema")):
        if use_ema:
            raise SystemExit(f"tools/validate.py: --use-ema, but {path} is not a training checkpoint with EMA weights")
        return checkpoint, False
    has_ema = checkpoint.get("state_dict_ema") is not None
    if use_ema and not has_ema:
        raise SystemExit(f"tools/validate.py: --use-ema, but {path} has no state_dict_ema (trained without model_ema)")
    ema = has_ema if use_ema is None and model_ema else bool(use_ema)
    if ema:
        return checkpoint["state_dict_ema"], True
    if "state_dict" not in checkpoint:
        raise SystemExit(f"tools/validate.py: {path} holds only EMA weights; pass --use-ema")
    return checkpoint["state_dict"], False


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``tools/validate.py`` with ``argv``; returns the figures written to the JSON file."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.config.endswith(".py"):
        raise SystemExit(
            "tools/validate.py evaluates classification recipes (.yaml); evaluate a checkpoint of an mmdet/mmseg "
            "config with tools/test.py CONFIG CHECKPOINT"
        )
    import backbones
    from backbones._weights import IncompleteCheckpointError, check_checkpoint_file, load_checkpoint_file
    from backbones.engine import (
        ConfigError,
        autocast_context,
        build_dataset,
        build_loader,
        build_model,
        data_config,
        dataset_num_classes,
        evaluate,
        load_config,
        progress_enabled,
        resolve_device,
    )

    overrides = list(args.set_) + list(args.overrides) + ["pretrained=false", "initial_checkpoint="]
    if args.batch_size:
        overrides.append(f"validation_batch_size={args.batch_size}")
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"tools/validate.py: checkpoint not found: {args.checkpoint}")
    try:
        check_checkpoint_file(args.checkpoint)  # an empty / cut-short file fails here, before data and model
    except IncompleteCheckpointError as e:
        raise SystemExit(f"tools/validate.py: {e}") from None
    try:
        cfg = load_config(args.config, overrides)
        device = resolve_device(cfg["device"])
        if cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])
        dataset = build_dataset(cfg, _split_name(cfg, args.split))
        model = build_model(cfg, num_classes=cfg["num_classes"] or dataset_num_classes(dataset))
        amp = autocast_context(cfg, device)
    except ConfigError as e:
        raise SystemExit(f"tools/validate.py: {e}") from None

    try:
        checkpoint: Any = load_checkpoint_file(args.checkpoint)  # a clear error for an empty / cut-short file
    except IncompleteCheckpointError as e:
        raise SystemExit(f"tools/validate.py: {e}") from None
    if args.checkpoint.endswith(".safetensors"):
        weights, ema = checkpoint, False
    else:
        weights, ema = _select_weights(checkpoint, args.use_ema, cfg["model_ema"], args.checkpoint)
    try:
        backbones.load_checkpoint(model, weights)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"tools/validate.py: {args.checkpoint} does not fit {cfg['model']}: {e}") from None
    model.to(device)
    loader = build_loader(cfg, dataset, data_config(cfg, model), device, is_training=False, distributed=False)

    t0 = time.time()
    figures = evaluate(model, loader, device, amp, desc=f"validate {args.split}",
                       disable_progress=progress_enabled(cfg["progress"]))
    result = {
        "checkpoint": os.path.abspath(args.checkpoint),
        "config": os.path.abspath(args.config),
        "model": cfg["model"],
        "split": args.split,
        "weights": "ema" if ema else "model",
        "epoch": checkpoint.get("epoch") if isinstance(checkpoint, dict) else None,
        "top1": figures["top1"],
        "top5": figures["top5"],
        "loss": figures["loss"],
        "images": figures["count"],
        "seconds": round(time.time() - t0, 3),
    }
    json_path = args.json or _json_path(args.checkpoint, args.split, ema)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{cfg['model']} ({result['weights']} weights of {os.path.basename(args.checkpoint)}) on {args.split} "
        f"({figures['count']} images): top-1 {figures['top1']:.2f}%  top-5 {figures['top5']:.2f}%  "
        f"loss {figures['loss']:.4f}\nwrote {json_path}"
    )
    return result


def _json_path(checkpoint: str, split: str, ema: bool) -> str:
    stem = os.path.basename(checkpoint)
    for ext in (".pth.tar", ".safetensors", ".pth", ".pt", ".bin"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"{stem}_{split}{'_ema' if ema else ''}.json")


if __name__ == "__main__":
    main()
