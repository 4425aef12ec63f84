#!/usr/bin/env python
"""Convert an official weight release into the folder timm loads from the hub or from disk, with a model card.

    python tools/convert_weights.py MODEL[.TAG] --src OFFICIAL_FILE_OR_URL --out DIR [--push ORG/NAME]
    python tools/convert_weights.py MODEL[.TAG] --out DIR       # downloads the tag's official file itself
    python tools/convert_weights.py --all FOLDER --out DIR [--push ORG]        # every tag whose file is in FOLDER
    python tools/convert_weights.py biformer_tiny --src biformer_tiny.pth --out w/bt --model-kwargs drop_path_rate=0

``--src`` is a local file, an URL or ``hf-hub:ORG/NAME[:FILE]``, in any layout the family's
``checkpoint_filter_fn`` accepts (official, timm, ours). The model is built under its registered name and the file
loaded strictly (``backbones.load_checkpoint(model, file, strict=True)``: the family's ``checkpoint_filter_fn``, every
key and shape checked, the classifier included). The folder written is what
``timm.models.save_for_hf`` writes (``config.json`` with the pretrained cfg, the reconstruction arguments and the
ImageNet-1k label names for 1000-class heads; ``model.safetensors``) plus a model card ``README.md`` made by timm's
``generate_readme`` (paper, published top-1, parameters, source URL and its sha256, licence). Load it with

    timm.create_model("local-dir:DIR", pretrained=True)        # after `import backbones`
    timm.create_model("hf-hub:ORG/NAME", pretrained=True)      # once pushed

``--push`` uploads the folder with ``huggingface_hub`` (the only step that needs a network; log in first with
``hf auth login``). Naming the pushed repo as the tag's ``hf_hub_id`` makes ``pretrained=True`` use it first.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import timm
import torch
import yaml
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_table  # noqa: E402  (tools/model_table.py: published top-1 and family facts)

import backbones  # noqa: E402
from backbones._registry import _ours  # noqa: E402
from backbones._weights import (  # noqa: E402
    _hub_download,
    _network_errors,
    check_checkpoint_file,
    load_checkpoint_file,
)


def resolve_tag(name: str) -> tuple[str, str, dict[str, Any]]:
    """(architecture, tag, pretrained cfg) of ``MODEL[.TAG]``; the default tag when none is given."""
    arch = name.split(".")[0]
    if arch not in backbones.list_models():
        raise SystemExit(f"tools/convert_weights.py: {arch!r} is not a backbones model (see backbones.list_models())")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag of a known architecture
        cfg = None
    if cfg is None:
        tags = timm.list_pretrained(f"{arch}.*") or [arch]
        raise SystemExit(f"tools/convert_weights.py: no pretrained tag {name!r}; tags of {arch}: {', '.join(tags)}")
    cfg = cfg.to_dict()
    return arch, cfg.get("tag") or "", cfg


def official_file_names(cfg: dict[str, Any]) -> list[str]:
    """File names under which the official release of ``cfg`` is published (the URL's, the hub file's)."""
    names = []
    url = cfg.get("url")
    if url:
        names.append(url[1] if isinstance(url, (tuple, list)) else os.path.basename(url.split("?")[0]))
    if cfg.get("hf_hub_filename"):
        names.append(cfg["hf_hub_filename"])
    return [n for n in names if n]


def official_source(cfg: dict[str, Any]) -> str:
    """The tag's own release location: its official URL, else its hub repository (``hf-hub:REPO[:FILE]``)."""
    url = cfg.get("url")
    if url:
        return url[0] if isinstance(url, (tuple, list)) else url
    if cfg.get("hf_hub_id"):
        return f"hf-hub:{cfg['hf_hub_id']}" + (f":{cfg['hf_hub_filename']}" if cfg.get("hf_hub_filename") else "")
    raise SystemExit(f"tools/convert_weights.py: {cfg.get('architecture')} has no published weights; pass --src FILE")


def fetch_source(src: str, cfg: dict[str, Any], tag_name: str) -> str:
    """A local path for ``src`` (a file, an URL downloaded into timm's cache, or ``hf-hub:REPO[:FILE]``)."""
    if "://" in src or src.startswith("hf-hub:"):
        try:
            return _download(src, cfg, tag_name)
        except _network_errors() as e:
            raise SystemExit(
                f"tools/convert_weights.py: could not download {src} ({type(e).__name__}: {e}); download it where "
                f"there is a network and pass the file: --src /path/to/{(official_file_names(cfg) or ['FILE'])[0]}"
            ) from None
    check_checkpoint_file(src)
    return src


def _download(src: str, cfg: dict[str, Any], tag_name: str) -> str:
    if src.startswith("hf-hub:"):
        repo, _, filename = src[len("hf-hub:"):].partition(":")
        path = _hub_download(repo, filename or None, None)
    else:
        from timm.models._hub import download_cached_file

        url = cfg.get("url")
        if isinstance(url, (tuple, list)) and url[0] == src:
            target = tuple(url)  # e.g. OneDrive links all end in ".../content": the cfg names the cache file
        else:
            base = os.path.basename(src.split("?")[0])
            target = (src, base if "." in base else f"{tag_name}.pth")
        path = download_cached_file(target, check_hash=False, progress=True)
    check_checkpoint_file(path)
    return path


def build_from_file(arch: str, tag: str, cfg: dict[str, Any], path: str, model_kwargs: dict[str, Any]):
    """Our model under the tag's name, with the release file loaded strictly through the family's filter.

    Strict means every tensor, the classifier included: pass ``num_classes`` in ``model_kwargs`` when the release's
    head differs from the tag's cfg. A family whose releases need a tolerant reader (LITv2's Swin-style training
    files with a pickled config) provides it as ``_load_official_file``.
    """
    name = f"{arch}.{tag}" if tag else arch
    model = timm.create_model(name, pretrained=False, **model_kwargs)
    reader = getattr(sys.modules[type(model).__module__], "_load_official_file", None)
    checkpoint = load_checkpoint_file(path, loader=reader)
    backbones.load_checkpoint(model, checkpoint, strict=True)
    return model.eval()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _family(arch: str) -> dict[str, str]:
    return model_table.FAMILIES[_ours[arch].__module__.rsplit(".", 1)[-1]]


def model_card(arch: str, tag: str, cfg: dict[str, Any], model: torch.nn.Module, src: str, path: str,
               repo: str | None) -> dict[str, Any]:
    """The card timm's ``generate_readme`` turns into README.md."""
    fam = _family(arch)
    name = f"{arch}.{tag}" if tag else arch
    params = sum(p.numel() for p in model.parameters())
    top1 = model_table.published_top1(name)
    h, w = cfg["input_size"][-2:]
    stats = {"Params (M)": f"{params / 1e6:.2f}", "Image size": f"{h} x {w}"}
    stats["Published ImageNet-1k top-1"] = f"{top1[0]} ({top1[1]})" if top1 else "none published for this tag"
    dataset = "ImageNet-22k" if "22k" in tag else ("ImageNet-1k" if "in1k" in tag else None)
    details: dict[str, Any] = {"Model Type": "Image classification / feature backbone", "Model Stats": stats}
    details["Papers"] = {fam["paper_name"]: f"https://arxiv.org/abs/{fam['paper_ids'].split(':')[-1]}"}
    details["Original"] = fam["origin_url"]
    try:
        details["Official source"] = official_source(cfg)
    except SystemExit:  # a tag without a published location
        pass
    details["Converted from"] = f"{src} (sha256 {_sha256(path)})"
    details["Licence"] = f"{fam['license']}, as the official release ({fam['licence_source']})"
    if dataset:
        details["Dataset"] = dataset
    load = f"hf-hub:{repo}" if repo else "local-dir:/path/to/this/folder"
    usage = (
        "```python\nimport timm\nimport backbones  # registers the architecture with timm\n\n"
        f'model = timm.create_model("{load}", pretrained=True).eval()\n'
        f'features = timm.create_model("{load}", pretrained=True, features_only=True)\n```\n'
        f"Made with `python tools/convert_weights.py {name} --src {src} --out DIR` from the backbones repository."
    )
    return dict(
        license=fam["license"],
        description=f"`{name}`: the official {fam['paper_name'].split(':')[0]} weights, converted to the layout "
        "timm loads (`config.json` + `model.safetensors`). Outputs equal those of the official file loaded directly.",
        details=details,
        usage=usage,
    )


def write_folder(model: torch.nn.Module, out: str | Path, card: dict[str, Any], cfg: dict[str, Any]) -> Path:
    """``save_for_hf`` (config.json + model.safetensors) and README.md into ``out``."""
    from timm.models._hub import generate_readme

    out = Path(out)
    fam = _family(cfg["architecture"])
    extra: dict[str, Any] = {k: fam[k] for k in ("license", "paper_ids", "paper_name", "origin_url")}
    model_config: dict[str, Any] = {"pretrained_cfg": extra}
    if model.num_classes == 1000 and "in1k" in (cfg.get("tag") or ""):
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        model_config["label_names"] = info.label_names()
        model_config["label_descriptions"] = info.label_descriptions(as_dict=True)
    timm.models.save_for_hf(model, out, model_config=model_config, safe_serialization=True)
    name = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]
    (out / "README.md").write_text(generate_readme(card, name), encoding="utf-8")
    return out


def push(out: Path, repo: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(library_name="timm", library_version=timm.__version__)
    repo = api.create_repo(repo, exist_ok=True).repo_id
    message = "Add weights converted from the official release"
    api.upload_folder(repo_id=repo, folder_path=str(out), commit_message=message)
    return repo


def convert(name: str, src: str | None, out: str | Path, model_kwargs: dict[str, Any] | None = None,
            repo: str | None = None) -> Path:
    """Convert one tag; returns the folder written."""
    arch, tag, cfg = resolve_tag(name)
    src = src or official_source(cfg)
    path = fetch_source(src, cfg, f"{arch}.{tag}")
    model = build_from_file(arch, tag, cfg, path, dict(model_kwargs or {}))
    card = model_card(arch, tag, cfg, model, src, path, repo)
    folder = write_folder(model, out, card, cfg)
    if repo:
        repo = push(folder, repo)
        print(f"pushed {folder} to https://huggingface.co/{repo}; name it in the tag's cfg (hf_hub_id={repo!r}) "
              "so that pretrained=True uses it first", file=sys.stderr)
    return folder


def convert_all(folder: str, out: str, org: str | None = None) -> list[dict[str, str]]:
    """Convert every tag of ``backbones.list_models(pretrained=True)`` whose release file is in ``folder``."""
    rows = []
    tags = backbones.list_models(pretrained=True)
    for name in tqdm(tags, desc="tags", file=sys.stderr):
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        names = official_file_names(cfg) + [f"{name}{ext}" for ext in (".pth", ".pth.tar", ".safetensors", ".bin")]
        found = next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)
        if found is None:
            rows.append(dict(tag=name, source="", status="no file (looked for " + ", ".join(names[:2]) + ")"))
            continue
        try:
            repo = f"{org}/{name}" if org else None
            target = convert(name, found, os.path.join(out, name), repo=repo)
            rows.append(dict(tag=name, source=found, status=f"converted: {target}"))
        except (ValueError, RuntimeError, OSError) as e:
            rows.append(dict(tag=name, source=found, status=f"failed: {type(e).__name__}: {e}".splitlines()[0]))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "conversions.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["tag", "source", "status"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _parse_kwargs(items: list[str]) -> dict[str, Any]:
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"tools/convert_weights.py: --model-kwargs takes KEY=VALUE items, got {item!r}")
        kwargs[key] = yaml.safe_load(value)
    return kwargs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="MODEL or MODEL.TAG (see backbones.list_models(pretrained=True))")
    parser.add_argument("--src", help="the official file: a path, an URL or hf-hub:ORG/NAME[:FILE] "
                        "(default: download the tag's official URL, else its hub repository)")
    parser.add_argument("--out", required=True, help="folder to write (with --all: one sub-folder per tag)")
    parser.add_argument("--all", metavar="FOLDER", help="convert every tag whose release file is in FOLDER")
    parser.add_argument("--push", metavar="ORG/NAME", help="upload the folder (with --all: ORG, repos ORG/MODEL.TAG)")
    parser.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model arguments (YAML values), e.g. for a reduced model")
    args = parser.parse_args(argv)
    if args.all:
        if args.model or args.src:
            parser.error("--all converts every tag found in FOLDER: give no MODEL / --src with it")
        rows = convert_all(args.all, args.out, args.push)
        for r in rows:
            print(f"{r['tag']}: {r['status']}")
        return 1 if any(r["status"].startswith("failed") for r in rows) else 0
    if not args.model:
        parser.error("give MODEL[.TAG] (or --all FOLDER)")
    folder = convert(args.model, args.src, args.out, _parse_kwargs(args.model_kwargs), args.push)
    print(f"wrote {folder}: timm.create_model('local-dir:{folder}', pretrained=True)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
