#!/usr/bin/env python
"""Print the README's model table: parameters, GMACs at the default input size, published top-1, status.

Parameters and MACs are computed here (models built on the meta device, so even the largest take seconds);
top-1 figures are the papers' / official repositories' published numbers, listed below with their source.

    python tools/model_table.py [--pattern 'focalnet*'] [--csv table.csv]
    python tools/model_table.py --weights     # the README's Weights table: every tag, its sources and sizes
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
    "agent_pvt_tiny": (78.4, "LeapLabTHU/Agent-Attention README"),
    "agent_pvt_small": (82.2, "LeapLabTHU/Agent-Attention README"),
    "agent_pvt_medium": (83.4, "LeapLabTHU/Agent-Attention README (83.8 at 256: agent_pvt_medium.in1k_256)"),
    "agent_pvt_large": (83.7, "LeapLabTHU/Agent-Attention README"),
    "agent_swin_tiny": (82.6, "LeapLabTHU/Agent-Attention README"),
    "agent_swin_small": (83.7, "LeapLabTHU/Agent-Attention README (84.1 at 288: agent_swin_small.in1k_288)"),
    "agent_swin_base": (84.0, "LeapLabTHU/Agent-Attention README (84.9 at 384: agent_swin_base.in1k_384)"),
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


# Models whose top-1 the official release gives only in a figure (no number to quote): "figure only" in the table.
TOP1_FIGURE_ONLY: dict[str, str] = {
    name: "SkyworkAI/MoH MoH-ViT README and paper: ImageNet-1k accuracy plotted, not tabulated"
    for name in ("moh_transnext_small_75", "moh_transnext_small_80", "moh_transnext_base_50", "moh_transnext_base_75")
}


# Per-tag figures where a tag is evaluated at another size than its architecture's default.
PUBLISHED_TOP1_BY_TAG: dict[str, tuple[float, str]] = {
    "litv2_base.in1k_384": (84.7, "ziplab/LITv2 README, 384"),
    "transnext_small.in1k_384": (86.0, "DaiShiResearch/TransNeXt README, 384"),
    "transnext_base.in1k_384": (86.2, "DaiShiResearch/TransNeXt README, 384"),
    "agent_pvt_medium.in1k_256": (83.8, "LeapLabTHU/Agent-Attention README, 256"),
    "agent_swin_small.in1k_288": (84.1, "LeapLabTHU/Agent-Attention README, 288"),
    "agent_swin_base.in1k_384": (84.9, "LeapLabTHU/Agent-Attention README, 384"),
}

# family module -> paper, official repository and licence (the repository's LICENSE / timm's pretrained cfg) and
# where the official weights are published; used by the model cards of tools/convert_weights.py and --weights.
FAMILIES: dict[str, dict[str, str]] = {
    "biformer": dict(
        paper_name="BiFormer: Vision Transformer with Bi-Level Routing Attention", paper_ids="arXiv:2303.08810",
        origin_url="https://github.com/rayleizhu/BiFormer", license="mit", licence_source="rayleizhu/BiFormer LICENSE",
        weights="OneDrive links of the rayleizhu/BiFormer README",
    ),
    "litv2": dict(
        paper_name="Fast Vision Transformers with HiLo Attention", paper_ids="arXiv:2205.13213",
        origin_url="https://github.com/ziplab/LITv2", license="apache-2.0", licence_source="ziplab/LITv2 LICENSE",
        weights="GitHub release v1.0 of ziplab/LITv2",
    ),
    "transnext": dict(
        paper_name="TransNeXt: Robust Foveal Visual Perception for Vision Transformers", paper_ids="arXiv:2311.17132",
        origin_url="https://github.com/DaiShiResearch/TransNeXt", license="apache-2.0",
        licence_source="DaiShiResearch/TransNeXt LICENSE", weights="the authors' Hugging Face repositories",
    ),
    "davit": dict(
        paper_name="DaViT: Dual Attention Vision Transformers", paper_ids="arXiv:2204.03645",
        origin_url="https://github.com/dingmyu/davit", license="apache-2.0", licence_source="timm's pretrained cfg",
        weights="Google Drive links of the dingmyu/davit README (no direct URL); timm's hub copy",
    ),
    "focalnet": dict(
        paper_name="Focal Modulation Networks", paper_ids="arXiv:2203.11926",
        origin_url="https://github.com/microsoft/FocalNet", license="mit", licence_source="microsoft/FocalNet LICENSE",
        weights="GitHub release v1.0.0 of microsoft/FocalNet (huge: retired Azure blob); timm's hub copy",
    ),
    "halonet": dict(
        paper_name="Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
        paper_ids="arXiv:2103.12731",
        origin_url="", license="apache-2.0",
        licence_source="timm's pretrained cfg", weights="trained by timm (GitHub release v0.1-attn-weights, hub)",
    ),
    "efficientvit_msra": dict(
        paper_name="EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention",
        paper_ids="arXiv:2305.07027", origin_url="https://github.com/microsoft/Cream/tree/main/EfficientViT",
        license="mit", licence_source="timm's pretrained cfg", weights="GitHub release v1.0 of EfficientViT_Model_Zoo",
    ),
    "agent_pvt": dict(
        paper_name="Agent Attention: On the Integration of Softmax and Linear Attention", paper_ids="arXiv:2312.08874",
        origin_url="https://github.com/LeapLabTHU/Agent-Attention", license="other",
        licence_source="LeapLabTHU/Agent-Attention has no LICENSE file",
        weights="TsinghuaCloud links of the LeapLabTHU/Agent-Attention README",
    ),
    "agent_swin": dict(
        paper_name="Agent Attention: On the Integration of Softmax and Linear Attention", paper_ids="arXiv:2312.08874",
        origin_url="https://github.com/LeapLabTHU/Agent-Attention", license="other",
        licence_source="LeapLabTHU/Agent-Attention has no LICENSE file",
        weights="TsinghuaCloud links of the LeapLabTHU/Agent-Attention README",
    ),
    "ravlt": dict(
        paper_name="Breaking the Low-Rank Dilemma of Linear Attention", paper_ids="arXiv:2411.07635",
        origin_url="https://github.com/qhfan/RALA", license="other",
        licence_source="qhfan/RALA has no LICENSE file", weights="the authors' Hugging Face repository aldjalkdf/RAVLT",
    ),
    "moh_transnext": dict(
        paper_name="MoH: Multi-Head Attention as Mixture-of-Head Attention", paper_ids="arXiv:2410.11842",
        origin_url="https://github.com/SkyworkAI/MoH", license="apache-2.0", licence_source="SkyworkAI/MoH LICENSE",
        weights="the authors' Hugging Face repositories Chat-UniVi/MoH-ViT-*",
    ),
    "hybrid": dict(
        paper_name="HybridNet: any registry mixer per stage (this repository; see docs/hybrids.md)", paper_ids="",
        origin_url="", license="apache-2.0",
        licence_source="this repository's setup.cfg", weights="no published weights",
    ),
}

# Official file sizes where the release states them (MB); every other tag: not stated.
OFFICIAL_FILE_MB: dict[str, tuple[int, str]] = {
    "transnext_tiny.in1k": (113, "Hugging Face file listing"),
    # MoH-ViT files are training checkpoints: the weights plus AdamW's two moments (about 3x the weights)
    "moh_transnext_small_80.in1k": (600, "Hugging Face file listing, with optimizer state"),
    "moh_transnext_base_50.in1k": (1080, "Hugging Face file listing, with optimizer state"),
    "moh_transnext_base_75.in1k": (1080, "Hugging Face file listing, with optimizer state"),
}


def published_top1(name: str) -> tuple[float, str] | None:
    """The published ImageNet-1k top-1 of ``MODEL[.TAG]`` (a tag evaluated at another size has its own)."""
    if name in PUBLISHED_TOP1_BY_TAG:
        return PUBLISHED_TOP1_BY_TAG[name]
    arch, _, tag = name.partition(".")
    if tag and ("22k" in tag or "florence" in tag or tag.endswith("_384")):
        return None  # the architecture's figure is for another training set or size
    return PUBLISHED_TOP1.get(arch)


def _source_cell(cfg: dict) -> str:
    url = cfg.get("url")
    if url:
        url = url[0] if isinstance(url, (tuple, list)) else url
        host = ("OneDrive" if "onedrive" in url else "Azure blob (retired)" if "windows.net" in url
                else "Hugging Face" if "huggingface.co" in url else "GitHub release" if "github.com" in url
                else "TsinghuaCloud" if "cloud.tsinghua.edu.cn" in url else "URL")
        return f"[{host}]({url})"
    if cfg.get("hf_hub_id", "").startswith("microsoft/Florence-2"):
        return f"[{cfg['hf_hub_id']}](https://huggingface.co/{cfg['hf_hub_id']}) (full Florence-2 checkpoint)"
    family = FAMILIES[_family_of(cfg["architecture"])]
    return family["weights"]


def _family_of(arch: str) -> str:
    from backbones._registry import _ours

    return _ours[arch].__module__.rsplit(".", 1)[-1]


def weights_rows(pattern: str = "*", sizes: bool = True) -> list[dict[str, str]]:
    """One row per pretrained tag: official source, hub mirror, sizes (``sizes``) and the conversion command."""
    rows = []
    params: dict[tuple, int] = {}
    for name in tqdm(backbones.list_models(pattern, pretrained=True), desc="tags", file=sys.stderr):
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        key = (cfg["architecture"], cfg["num_classes"])
        if sizes and key not in params:
            with torch.device("meta"):
                params[key] = sum(p.numel() for p in timm.create_model(name).parameters())
        stated = OFFICIAL_FILE_MB.get(name)
        rows.append(dict(
            tag=name,
            source=_source_cell(cfg),
            hub=cfg.get("hf_hub_id") or "none yet",
            official_mb=f"{stated[0]} ({stated[1]})" if stated else "not stated",
            converted_mb=f"{params[key] * 4 / 1e6:.0f}" if sizes else "",
            command=f"python tools/convert_weights.py {name} --out weights/{name}",
        ))
    return rows


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
    parser.add_argument("--weights", action="store_true",
                        help="the README's Weights table instead: every pretrained tag, its sources and sizes")
    args = parser.parse_args(argv)
    if args.weights:
        return _print_weights(args)
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
                top1=f"{top1[0]:.1f}" if top1 else "figure only" if name in TOP1_FIGURE_ONLY else "-",
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


def _print_weights(args: argparse.Namespace) -> int:
    rows = weights_rows(args.pattern)
    print("| tag | official source | hub (tried first) | official file (MB) | converted, fp32 (MB) | conversion |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['tag']}` | {r['source']} | {r['hub']} | {r['official_mb']} | {r['converted_mb']} | "
              f"`{r['command']}` |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
