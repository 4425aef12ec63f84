"""Dataset factory: this repository's small datasets by name, everything else through timm's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .digits import DigitsDataset

__all__ = ["create_dataset", "register_dataset", "list_datasets"]

_DATASETS: dict[str, Callable[..., Any]] = {}


def register_dataset(name: str, factory: Callable[..., Any]) -> None:
    """Make ``create_dataset(name, ...)`` (and a recipe's ``dataset: name``) build ``factory(root=, split=, **kw)``."""
    if name in _DATASETS:
        raise ValueError(f"dataset {name!r} is already registered ({_DATASETS[name]})")
    _DATASETS[name] = factory


def list_datasets() -> list[str]:
    """Names registered here; any name timm's ``create_dataset`` knows (``''`` = ImageFolder, ``torch/...``,
    ``hfds/...``, ...) works as well."""
    return sorted(_DATASETS)


def create_dataset(name: str, root: str = "", split: str = "train", is_training: bool = False, **kwargs: Any) -> Any:
    """Build a dataset: a name registered here, else ``timm.data.create_dataset(name, root, split, ...)``.

    ``kwargs`` go to the dataset's constructor (``image_size`` for ``digits``; timm's options such as
    ``class_map`` or ``download`` otherwise).
    """
    if name in _DATASETS:
        return _DATASETS[name](root=root, split=split, **kwargs)
    import os

    from timm.data import create_dataset as timm_create_dataset

    if not name and (not root or not os.path.isdir(root)):
        raise FileNotFoundError(
            f"dataset '' reads an image folder, but data_dir {root!r} is not a directory; set data_dir to a folder "
            f"with one sub-folder per split (or per class), or use a registered dataset: {list_datasets()}"
        )
    return timm_create_dataset(name, root=root, split=split, is_training=is_training, **kwargs)


register_dataset("digits", DigitsDataset)
