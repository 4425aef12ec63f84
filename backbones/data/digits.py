"""scikit-learn's handwritten digits as a small image-classification dataset.

``sklearn.datasets.load_digits`` ships inside scikit-learn (no download): 1797 grey-level 8x8 images of the
digits 0-9, pixel values 0-16. This dataset upsamples them (bilinear) to ``image_size`` x ``image_size`` RGB PIL
images, so timm's transforms and loaders take them like any photo, and splits them once, stratified by class, into
a fixed train / held-out part (``val_fraction`` = 0.2 and ``seed`` = 0: 1437 train, 360 val images).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["DigitsDataset"]

_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "val", "eval": "val"}


class DigitsDataset:
    """The 8x8 digits of scikit-learn, upsampled to RGB images; a map-style dataset of ``(PIL image, label)``.

    Args:
        root: unused (the data ships with scikit-learn); accepted so the dataset is built like timm's.
        split: ``train`` or ``val``. ``test`` (and ``validation``) name the same held-out part: there is no third split.
        image_size: side of the square images returned.
        val_fraction: share of each class held out.
        seed: seed of the stratified split; keep it fixed so every run holds out the same images.
        transform: applied to the PIL image (timm's ``create_loader`` sets it).
        target_transform: applied to the integer label.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        image_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in _SPLIT_ALIASES:
            raise ValueError(f"digits: unknown split {split!r}; use one of {sorted(_SPLIT_ALIASES)}")
        self.split = _SPLIT_ALIASES[split]
        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0-16 -> 0-255
        labels = digits.target.astype(np.int64)
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
        )
        idx = np.sort(train_idx if self.split == "train" else val_idx)
        self.images = np.stack([_upsample(images[i], image_size) for i in idx])
        self.targets = labels[idx]
        self.classes = [str(c) for c in range(self.num_classes)]
        self.image_size = image_size
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img: Any = Image.fromarray(self.images[index]).convert("RGB")
        target: Any = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        return f"DigitsDataset(split={self.split!r}, images={len(self)}, size={self.image_size}x{self.image_size})"


def _upsample(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
