#!/usr/bin/env python
"""Print the README's model table: parameters, GMACs at the default input size, published top-1, status.

Parameters and MACs are computed here (models built on the meta device, so even the largest take seconds);
top-1 figures are the papers' / official repositories' published numbers, listed below with their source.

    python tools/model_table.py [--pattern 'focalnet*'] [--csv table.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import backbones

# name -> (ImageNet-1k top-1 at the default size, source). Families add their rows here.
PUBLISHED_TOP1: dict[str, tuple[float, str]] = {
    "biformer_tiny": (81.4, "BiFormer README"),
    "biformer_small": (83.8, "BiFormer README"),
    "biformer_base": (84.3, "BiFormer README"),
    "focalnet_tiny_srf": (82.1, "FocalNet README"),
    "focalnet_tiny_lrf": (82.3, "FocalNet README"),
    "focalnet_small_srf": (83.4, "FocalNet README"),
    "focalnet_small_lrf": (83.5, "FocalNet README"),
    "focalnet_base_srf": (83.7, "FocalNet README"),
    "focalnet_base_lrf": (83.9, "FocalNet README"),
    "litv2_small": (82.0, "ziplab/LITv2 README"),
    "litv2_medium": (83.3, "ziplab/LITv2 README"),
    "litv2_base": (83.6, "ziplab/LITv2 README (84.7 at 384: litv2_base.in1k_384)"),
    "transnext_micro": (82.5, "DaiShiResearch/TransNeXt README"),
    "transnext_tiny": (84.0, "DaiShiResearch/TransNeXt README"),
    "transnext_small": (84.7, "DaiShiResearch/TransNeXt README (86.0 at 384: transnext_small.in1k_384)"),
    "transnext_base": (84.8, "DaiShiResearch/TransNeXt README (86.2 at 384: transnext_base.in1k_384)"),
    "ravlt_t": (82.8, "qhfan/RALA README"),
    "ravlt_s": (84.4, "qhfan/RALA README"),
    "ravlt_b": (85.5, "qhfan/RALA README"),
    "ravlt_l": (85.8, "qhfan/RALA README"),
    "davit_tiny": (82.8, "dingmyu/davit README"),
    "davit_small": (84.2, "dingmyu/davit README"),
    "davit_base": (84.6, "dingmyu/davit README"),
    "efficientvit_m0": (63.2, "Cream EfficientViT classification README"),
    "efficientvit_m1": (68.4, "Cream EfficientViT classification README"),
    "efficientvit_m2": (70.8, "Cream EfficientViT classification README"),
    "efficientvit_m3": (73.4, "Cream EfficientViT classification README"),
    "efficientvit_m4": (74.3, "Cream EfficientViT classification README"),
    "efficientvit_m5": (77.1, "Cream EfficientViT classification README"),
    # HaloNet: the paper's table (arXiv:2103.12731, as reproduced by keras_cv_attention_models; H4 is 85.5 with
    # IN-21k pre-training); timm's hybrids: pytorch-image-models results/results-imagenet.csv (their weights).
    "halonet_h0": (77.9, "HaloNet paper table (H0)"),
    "halonet_h1": (79.9, "HaloNet paper table (H1; timm's halonet_h1 ships no weights)"),
    "halonet_h2": (80.4, "HaloNet paper table (H2)"),
    "halonet_h3": (81.9, "HaloNet paper table (H3, 320px)"),
    "halonet_h4": (83.3, "HaloNet paper table (H4, 384px)"),
    "halonet_h5": (84.0, "HaloNet paper table (H5, 448px)"),
    "halonet_h6": (84.4, "HaloNet paper table (H6, 512px)"),
    "halonet_h7": (84.9, "HaloNet paper table (H7, 600px)"),
    "halonet26t": (79.134, "timm results-imagenet.csv (halonet26t.a1h_in1k)"),
    "sehalonet33ts": (80.976, "timm results-imagenet.csv (sehalonet33ts.ra2_in1k)"),
    "halonet50ts": (81.640, "timm results-imagenet.csv (halonet50ts.a1h_in1k)"),
    "eca_halonext26ts": (79.518, "timm results-imagenet.csv (eca_halonext26ts.c1_in1k)"),
}


def count(name: str) -> tuple[int, float, tuple[int, int]]:
    """(parameters, GMACs at the default input size, default input size) of ``name``."""
    cfg = timm.models.get_pretrained_cfg(name)
    hw = tuple(cfg.input_size[-2:]) if cfg is not None else (224, 224)
    with torch.device("meta"):
        model = timm.create_model(name).eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.empty(1, 3, *hw)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    return params, counter.get_total_flops() / 2e9, hw


def status(name: str) -> str:
    parts = []
    if backbones.is_replacement(name):
        parts.append("drop-in for timm")
    if timm.list_pretrained(f"{name}.*"):
        parts.append("weights: " + ", ".join(t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")))
    return "; ".join(parts) or "no published weights"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pattern", default="*")
    parser.add_argument("--csv", default=None, help="also write the rows as CSV")
    args = parser.parse_args(argv)
    rows = []
    for name in tqdm(backbones.list_models(args.pattern), desc="models", file=sys.stderr):
        params, gmacs, hw = count(name)
        top1 = PUBLISHED_TOP1.get(name)
        rows.append(
            dict(
                model=name,
                input=f"{hw[0]}x{hw[1]}",
                params_m=f"{params / 1e6:.2f}",
                gmacs=f"{gmacs:.2f}",
                top1=f"{top1[0]:.1f}" if top1 else "-",
                status=status(name),
            )
        )
    print("| model | input | params (M) | GMACs | top-1 (published) | status |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['input']} | {r['params_m']} | {r['gmacs']} | {r['top1']} | {r['status']} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
