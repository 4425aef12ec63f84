#!/usr/bin/env python
"""Write a tiny, real-image COCO-format and ADE20K-format data set for smoke runs of the mm configs.

Scenes are crops of scikit-learn's sample photographs (``load_sample_images``: china.jpg, flower.jpg) with
1-3 handwritten digits of scikit-learn's ``load_digits`` (8x8 scans, upscaled to 30-56 px) pasted in as ink
of a random colour. Every pasted digit is an instance of its class (10 classes, named "0".."9"): its box and
its polygons (outer contours of the thresholded digit, so the holes of 0/6/8/9 are filled) go to the COCO
json, its pixels to the ADE-style label map.

Layout under ``--out`` (default ``data/tiny``)::

    coco/annotations/instances_{train,val}.json  coco/{train,val}/*.jpg   categories 1..10 = digits "0".."9"
    ade/images/{training,validation}/*.jpg       ade/annotations/{training,validation}/*.png

ADE label maps follow ADE20K's convention for ``reduce_zero_label=True``: 0 = ignore (a ring of
anti-aliased ink around each digit), 1 = background, 2 + d = digit d; after reduction the 11 classes are
("background", "0", ..., "9") and 0 becomes 255.

Images are ``--height`` x ``--width`` (default 120 x 152, deliberately not multiples of 32). Deterministic for
a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

DIGIT_CLASSES = tuple(str(d) for d in range(10))
SEG_CLASSES = ("background",) + DIGIT_CLASSES


def _backgrounds() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [img[:, :, ::-1].copy() for img in load_sample_images().images]  # RGB -> BGR (cv2)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(int)


def _scene(rng: np.random.Generator, bgs, digits, labels, pool, h: int, w: int):
    """One image, its instances [(digit, mask)] and its ADE label map."""
    bg = bgs[rng.integers(len(bgs))]
    scale = rng.uniform(1.0, 2.5)
    ch, cw = min(int(h * scale), bg.shape[0]), min(int(w * scale), bg.shape[1])
    y, x = rng.integers(bg.shape[0] - ch + 1), rng.integers(bg.shape[1] - cw + 1)
    img = cv2.resize(bg[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    label = np.ones((h, w), np.uint8)  # 1 = background
    instances, boxes = [], []
    for _ in range(rng.integers(1, 4)):
        size = int(rng.integers(30, 57))
        for _attempt in range(20):
            y0, x0 = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
            if all(x0 >= bx1 + 2 or x0 + size + 2 <= bx0 or y0 >= by1 + 2 or y0 + size + 2 <= by0
                   for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        idx = int(pool[rng.integers(len(pool))])
        alpha = np.clip(cv2.resize(digits[idx], (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
        patch = img[y0 : y0 + size, x0 : x0 + size]
        # Ink colour far from the local background so the digit is visible.
        mean = patch.reshape(-1, 3).mean(0)
        ink = np.where(mean > 127, rng.uniform(0, 60, 3), rng.uniform(195, 255, 3)).astype(np.float32)
        img[y0 : y0 + size, x0 : x0 + size] = patch * (1 - alpha[..., None]) + ink * alpha[..., None]
        mask = np.zeros((h, w), np.uint8)
        mask[y0 : y0 + size, x0 : x0 + size] = alpha > 0.5
        if mask.sum() < 20:
            continue
        ring = np.zeros((h, w), bool)
        ring[y0 : y0 + size, x0 : x0 + size] = (alpha > 0.15) & (alpha <= 0.5)
        label[ring] = 0
        label[mask.astype(bool)] = 2 + labels[idx]
        instances.append((int(labels[idx]), mask))
        ys, xs = np.nonzero(mask)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return np.clip(img, 0, 255).astype(np.uint8), instances, label


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_tiny_data(out: str | Path, n_train: int = 24, n_val: int = 8, height: int = 120, width: int = 152,
                    seed: int = 0) -> dict[str, int]:
    """Write both layouts under ``out``; return counts (images / instances per split)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    bgs = _backgrounds()
    digits, labels = _digits()
    half = len(digits) // 2  # train and val draw digits from disjoint scans
    pools = {"train": np.arange(half), "val": np.arange(half, len(digits))}
    categories = [{"id": d + 1, "name": name, "supercategory": "digit"} for d, name in enumerate(DIGIT_CLASSES)]
    counts: dict[str, int] = {}
    ann_id = 1
    for split, n, ade_split in (("train", n_train, "training"), ("val", n_val, "validation")):
        coco_dir = out / "coco" / split
        ade_img, ade_ann = out / "ade" / "images" / ade_split, out / "ade" / "annotations" / ade_split
        for d in (coco_dir, ade_img, ade_ann, out / "coco" / "annotations"):
            d.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            img, instances, label = _scene(rng, bgs, digits, labels, pools[split], height, width)
            name = f"{split}_{i:04d}"
            cv2.imwrite(str(coco_dir / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(ade_img / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(ade_ann / f"{name}.png"), label)
            images.append({"id": i + 1, "file_name": f"{name}.jpg", "height": height, "width": width})
            for digit, mask in instances:
                polys = _polygons(mask)
                ys, xs = np.nonzero(mask)
                x0, y0 = int(xs.min()), int(ys.min())
                annotations.append({
                    "id": ann_id, "image_id": i + 1, "category_id": digit + 1, "iscrowd": 0,
                    "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                    "area": float(mask.sum()), "segmentation": polys,
                })
                ann_id += 1
        coco = {"info": {"description": "backbones tiny digits (scikit-learn digits on sample photos)"},
                "licenses": [], "images": images, "annotations": annotations, "categories": categories}
        (out / "coco" / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        counts[f"{split}_images"], counts[f"{split}_instances"] = len(images), len(annotations)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/tiny", help="output directory (default data/tiny)")
    parser.add_argument("--train", type=int, default=24, help="training images")
    parser.add_argument("--val", type=int, default=8, help="validation images")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=152)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = write_tiny_data(args.out, args.train, args.val, args.height, args.width, args.seed)
    print(f"wrote {args.out}/coco and {args.out}/ade: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
