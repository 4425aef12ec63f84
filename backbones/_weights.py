"""Where pretrained weights come from, and clear errors when they cannot be had.

Every entrypoint registered through :func:`backbones.register_model` is wrapped by :func:`with_weight_sources`, so
``timm.create_model(name, pretrained=True)`` locates its file here before timm loads it:

1. an explicit source (``pretrained_cfg_overlay=dict(file=...)``, ``local-dir:`` folders, a state dict) is used as
   given, after :func:`check_checkpoint_file` made sure the file is whole;
2. otherwise the official file already in the torch hub cache (``<torch hub>/checkpoints/<file name>``) is used
   without touching the network;
3. otherwise the tag's hub mirror (``hf_hub_id``: timm's own copies for the drop-in names, a converted folder
   published with ``tools/convert_weights.py --push`` for the others) is tried first and the official ``url``
   second; the logger ``backbones.weights`` says which one served, and warns when the mirror failed.

When nothing can be fetched, :class:`WeightsUnavailableError` names every location that failed and the three ways
out: a local copy of the file, a converted ``local-dir:`` folder, or the cache path to drop the file into. A file
that is empty, cut short or a saved web page raises :class:`IncompleteCheckpointError` naming its path, wherever a
checkpoint is read (``backbones.load_checkpoint``, the mm adapter's ``init_cfg``, ``tools/*.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IncompleteCheckpointError",
    "WeightsUnavailableError",
    "check_checkpoint_file",
    "find_checkpoint_in_dir",
    "load_checkpoint_file",
    "resolve_checkpoint_path",
    "url_cache_path",
    "with_weight_sources",
]

_logger = logging.getLogger("backbones.weights")

# What timm's local-dir loader looks for, in its order (timm.models._hub.load_state_dict_from_path).
_PREFERRED_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")
_EXTENSIONS = (".safetensors", ".pth", ".pth.tar", ".bin")


class IncompleteCheckpointError(ValueError):
    """A checkpoint file that is empty, cut short or not a checkpoint at all (e.g. a saved web page)."""


class WeightsUnavailableError(RuntimeError):
    """``pretrained=True`` found no reachable source for the weights of a tag."""


# ---------------------------------------------------------------------------------------------- checkpoint files


def _incomplete(path: Path, size: int, what: str) -> IncompleteCheckpointError:
    return IncompleteCheckpointError(
        f"checkpoint file {path} is incomplete: {what} ({size:,} bytes on disk). The download or copy was cut "
        "short; delete the file and fetch it again (a cached download is fetched again once it is deleted)."
    )


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Raise a clear error unless ``path`` is a whole checkpoint file; reads only its first and last bytes.

    Checked: the file exists and is not empty; a PyTorch zip archive still has its central directory (the end of
    the file); a ``.safetensors`` file is as long as its header says; the file is not a web page saved in place of
    the weights (what a dead share link serves). Legacy pickle files cannot be checked without reading them; their
    read errors are translated by :func:`load_checkpoint_file`.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"checkpoint {p} is a folder; pass 'local-dir:{p}' or the file inside it")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    size = p.stat().st_size
    if size == 0:
        raise _incomplete(p, size, "the file is empty")
    with p.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(p):
            raise _incomplete(p, size, "its zip archive has no central directory, i.e. the end of the file is missing")
    elif p.name.endswith(".safetensors") or (len(head) >= 9 and head[8:9] == b"{"):
        header_len = int.from_bytes(head[:8], "little")
        if len(head) < 8 or 8 + header_len > size:
            raise _incomplete(p, size, f"its safetensors header announces {header_len:,} bytes the file does not hold")
        with p.open("rb") as f:
            f.seek(8)
            try:
                header = json.loads(f.read(header_len))
            except ValueError as e:
                raise _incomplete(p, size, f"its safetensors header is not valid JSON ({e})") from None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise _incomplete(p, size, f"its tensors need {8 + header_len + end:,} bytes")
    elif head.lstrip()[:1] == b"<":
        raise IncompleteCheckpointError(
            f"checkpoint file {p} is a web page (it starts with {head.lstrip()[:20]!r}), not weights: the link served "
            "a login, error or download-warning page. Delete it and download the file in a browser."
        )


@contextlib.contextmanager
def _read_errors(path: str | os.PathLike) -> Iterator[None]:
    """Translate the errors torch.load / safetensors raise on a damaged file into one naming ``path``."""
    try:
        yield
    except (EOFError, pickle.UnpicklingError) as e:
        raise _incomplete(Path(path), _size(path), f"reading it stopped early ({type(e).__name__}: {e})") from e
    except (RuntimeError, OSError) as e:
        text = str(e)
        damaged = ("central directory", "PytorchStreamReader", "unexpected EOF", "corrupted", "incomplete metadata")
        if any(s in text for s in damaged) or getattr(e, "errno", None) == 22:
            raise _incomplete(Path(path), _size(path), f"reading it failed ({type(e).__name__}: {e})") from e
        raise


def _size(path: str | os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def find_checkpoint_in_dir(folder: str | os.PathLike) -> Path:
    """The weight file timm's ``local-dir:`` loader picks in ``folder`` (model.safetensors first)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    for name in _PREFERRED_FILES:
        if (folder / name).is_file():
            return folder / name
    for ext in _EXTENSIONS:
        files = sorted(folder.glob(f"*{ext}"))
        if files:
            return files[0]
    raise FileNotFoundError(
        f"checkpoint folder {folder} holds no weights (looked for {', '.join(_PREFERRED_FILES)} and *{_EXTENSIONS})"
    )


def resolve_checkpoint_path(checkpoint: str | os.PathLike) -> Path:
    """A local checkpoint path: ``local-dir:DIR`` and folders become the weight file inside them."""
    text = os.fspath(checkpoint)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:"):]
    p = Path(text)
    return find_checkpoint_in_dir(p) if p.is_dir() else p


def load_checkpoint_file(path: str | os.PathLike, weights_only: bool = False, loader: Callable | None = None) -> Any:
    """Read a checkpoint (``.safetensors`` or anything ``torch.load`` reads; ``local-dir:`` folders too).

    An empty, cut-short or otherwise unreadable file raises :class:`IncompleteCheckpointError` naming the path.
    ``loader`` replaces ``torch.load`` (e.g. a tolerant unpickler) for non-safetensors files.
    """
    p = resolve_checkpoint_path(path)
    check_checkpoint_file(p)
    with _read_errors(p):
        if p.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(p, device="cpu")
        if loader is not None:
            return loader(str(p))
        return torch.load(p, map_location="cpu", weights_only=weights_only)


# -------------------------------------------------------------------------------------------- pretrained sources


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # URLError, HTTPError, timeouts, hub HTTP / offline errors
    for module, name in (("httpx", "HTTPError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(__import__(module), name))
    return tuple(errors)


def _url_and_name(url: str | tuple | list) -> tuple[str, str]:
    if isinstance(url, (tuple, list)):
        return url[0], url[1]
    from urllib.parse import urlparse

    return url, os.path.basename(urlparse(url).path)


def url_cache_path(url: str | tuple | list, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where timm / torch.hub keep (and look for) the download of ``url``: ``<torch hub>/checkpoints/<name>``."""
    from timm.models._hub import get_cache_dir

    return Path(cache_dir or get_cache_dir()) / _url_and_name(url)[1]


def _hub_download(hub_id: str, filename: str | None, cache_dir: Any) -> str:
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from timm.models._hub import hf_hub_download, hf_split

    if hf_hub_download is None:
        raise ImportError("huggingface_hub is not installed")
    repo, revision = hf_split(hub_id)
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]  # timm's order
    for i, name in enumerate(names):
        try:
            return hf_hub_download(repo, name, revision=revision, cache_dir=cache_dir)
        except EntryNotFoundError as e:
            if isinstance(e, LocalEntryNotFoundError) or i == len(names) - 1:
                raise
    raise AssertionError("unreachable")


def _ways_out(name: str, cfg: dict[str, Any], cache_dir: Any) -> str:
    file_hint = _url_and_name(cfg["url"])[1] if cfg.get("url") else (cfg.get("hf_hub_filename") or "model.safetensors")
    custom = ", custom_load=True" if cfg.get("custom_load") else ""  # the release needs the family's own reader
    lines = [
        "Ways out:",
        f"  1. a local copy of the file: timm.create_model({name!r}, pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='/path/to/{file_hint}'{custom}))",
        f"  2. a converted folder: python tools/convert_weights.py {name} --src /path/to/{file_hint} --out DIR "
        "(on any machine), then timm.create_model('local-dir:DIR', pretrained=True)",
    ]
    if cfg.get("url"):
        lines.append(f"  3. drop the file into the cache, where it is used without a download: "
                     f"{url_cache_path(cfg['url'], cache_dir)}")
    else:
        from huggingface_hub.constants import HF_HUB_CACHE

        lines.append(f"  3. fill the Hugging Face cache ({cache_dir or HF_HUB_CACHE}) where there is a network "
                     f"(`hf download {cfg.get('hf_hub_id')}`), copy it here and set HF_HUB_OFFLINE=1")
    return "\n".join(lines)


def fetch_pretrained(name: str, cfg: dict[str, Any], cache_dir: Any = None) -> tuple[str, bool]:
    """Download (or find in the cache) the weight file of ``cfg``: (local path, whether ``custom_load`` applies).

    Order: the official file already in the torch hub cache, the hub mirror (``hf_hub_id``), the official URL.
    """
    from timm.models import _builder

    url, hub_id = cfg.get("url"), cfg.get("hf_hub_id")
    custom_load = bool(cfg.get("custom_load", False))
    if url and url_cache_path(url, cache_dir).is_file():
        path = url_cache_path(url, cache_dir)
        _logger.info(f"{name}: pretrained weights from the cache of the official URL ({path})")
        return str(path), custom_load
    failures = []
    if hub_id:
        try:
            path = _hub_download(hub_id, cfg.get("hf_hub_filename"), cache_dir)
            _logger.info(f"{name}: pretrained weights from the hub mirror {hub_id} ({path})")
            return path, False  # a hub file is a plain state dict: timm loads hub weights without custom_load
        except ImportError as e:
            failures.append(f"hub mirror {hub_id}: huggingface_hub is not installed ({e})")
        except _network_errors() as e:
            failures.append(f"hub mirror {hub_id}: {type(e).__name__}: {e}")
        if url:
            _logger.warning(f"{name}: {failures[-1]}; trying the official URL")
    if url:
        from timm.models._hub import download_cached_file

        try:
            path = download_cached_file(url, check_hash=_builder._CHECK_HASH, progress=_builder._DOWNLOAD_PROGRESS,
                                        cache_dir=cache_dir)
            _logger.info(f"{name}: pretrained weights from the official URL {_url_and_name(url)[0]} ({path})")
            return path, custom_load
        except _network_errors() as e:
            failures.append(f"official URL {_url_and_name(url)[0]}: {type(e).__name__}: {e}")
    if not failures:
        raise RuntimeError(f"No pretrained weights exist for {name}. Use `pretrained=False` for random init.")
    raise WeightsUnavailableError(
        f"{name}: the pretrained weights could not be downloaded:\n  "
        + "\n  ".join(failures) + "\n" + _ways_out(name, cfg, cache_dir)
    )


def with_weight_sources(entrypoint: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    """Wrap a model entrypoint so that ``pretrained=True`` locates its file through :func:`fetch_pretrained`.

    The located file is handed to timm as ``pretrained_cfg_overlay=dict(file=..., custom_load=...)``, so timm's
    own loading (the family's ``checkpoint_filter_fn``, classifier and input-channel adaptation, ``features_only``)
    runs unchanged.
    """

    @functools.wraps(entrypoint)
    def create(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        if not pretrained:
            return entrypoint(pretrained=False, **kwargs)
        from timm.models._builder import resolve_pretrained_cfg

        variant = entrypoint.__name__
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), overlay).to_dict()
        name = f"{variant}.{cfg['tag']}" if cfg.get("tag") else variant
        if cfg.get("state_dict") is not None:
            path = None
        elif cfg.get("source") == "local-dir" or cfg.get("file"):
            path = resolve_checkpoint_path(cfg["file"])
            check_checkpoint_file(path)
        elif cfg.get("source") == "hf-hub":  # `hf-hub:` names: timm downloads, errors still say what failed
            try:
                return entrypoint(pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            except _network_errors() as e:
                raise WeightsUnavailableError(
                    f"{name}: the hub weights of {cfg.get('hf_hub_id')} could not be downloaded "
                    f"({type(e).__name__}: {e})\n" + _ways_out(name, cfg, kwargs.get("cache_dir"))
                ) from e
        else:
            path, custom_load = fetch_pretrained(name, cfg, kwargs.get("cache_dir"))
            check_checkpoint_file(path)
            overlay.update(file=path, custom_load=custom_load)
        with _read_errors(path or "<state dict>"):
            return entrypoint(pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)

    return create
