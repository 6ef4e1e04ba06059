"""ADE20K (SceneParsing, 150 classes): ``images/{training,validation}/*.jpg``, ``annotations/.../*.png``.

Annotation 0 is "other" and is ignored (255); class k (1-150) becomes training id k - 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_client.config import IGNORE_INDEX, DataConfig
from search_client.data.base import DatasetError, Sample, SegmentationDataset, require_dir

SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def map_ade_labels(raw: np.ndarray) -> np.ndarray:
    lbl = raw.astype(np.int32) - 1
    lbl[(lbl < 0) | (lbl > 149)] = IGNORE_INDEX
    return lbl.astype(np.uint8)


def ade20k_dataset(cfg: DataConfig, split: str, train: bool) -> SegmentationDataset:
    root = require_dir(Path(cfg.root), "ADE20K root")
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    if split not in SPLITS:
        raise DatasetError(f"unknown ADE20K split {split!r}; use one of {', '.join(SPLITS)}")
    img_dir = require_dir(root / "images" / SPLITS[split], "ADE20K images (images/<training|validation>)")
    ann_dir = require_dir(root / "annotations" / SPLITS[split], "ADE20K annotations (annotations/<split>)")
    images = sorted(img_dir.glob("*.jpg"))
    if not images:
        raise DatasetError(f"no .jpg images in {img_dir}")
    samples = [Sample(p, ann_dir / f"{p.stem}.png") for p in images]
    missing = [s.label for s in samples if not s.label.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(samples)} ADE20K annotations missing, e.g. {missing[0]}")
    return SegmentationDataset(samples, map_ade_labels, cfg, train)
