"""Pascal VOC 2012 segmentation (21 classes incl. background; 255 = object border, ignored).

Layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG: pixel values are the
class indices), ``ImageSets/Segmentation/<split>.txt``. The root may be ``VOCdevkit`` or ``VOC2012``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_client.config import DataConfig
from search_client.data.base import DatasetError, Sample, SegmentationDataset, require_dir

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def keep_voc_labels(raw: np.ndarray) -> np.ndarray:
    # Values 21..254 do not occur in VOC; 255 (border) stays ignored.
    return raw.astype(np.uint8)


def voc_dataset(cfg: DataConfig, split: str, train: bool) -> SegmentationDataset:
    root = require_dir(Path(cfg.root), "Pascal VOC root")
    if (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetError(f"Pascal VOC split file missing: {split_file}")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    img_dir = require_dir(root / "JPEGImages", "Pascal VOC images (JPEGImages)")
    lbl_dir = require_dir(root / "SegmentationClass", "Pascal VOC labels (SegmentationClass)")
    samples = [Sample(img_dir / f"{i}.jpg", lbl_dir / f"{i}.png") for i in ids]
    missing = [p for s in samples for p in (s.image, s.label) if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} Pascal VOC files listed in {split_file.name} are missing, e.g. {missing[0]}")
    return SegmentationDataset(samples, keep_voc_labels, cfg, train)
