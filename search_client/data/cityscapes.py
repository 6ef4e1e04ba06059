"""Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/<split>/<city>/*_gtFine_labelIds.png``.

labelIds (0-33, plus -1 for license plates stored as 255 in some tools) map to the 19 training ids through a
256-entry lookup table; every id that is not evaluated maps to 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_client.config import IGNORE_INDEX, DataConfig
from search_client.data.base import DatasetError, Sample, SegmentationDataset, require_dir

# (labelId, trainId, name) of the 19 evaluated classes, as in the official cityscapesScripts label table
# (every other labelId maps to 255, ignored).
TRAIN_CLASSES: tuple[tuple[int, int, str], ...] = (
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"), (13, 4, "fence"),
    (17, 5, "pole"), (19, 6, "traffic light"), (20, 7, "traffic sign"), (21, 8, "vegetation"),
    (22, 9, "terrain"), (23, 10, "sky"), (24, 11, "person"), (25, 12, "rider"), (26, 13, "car"),
    (27, 14, "truck"), (28, 15, "bus"), (31, 16, "train"), (32, 17, "motorcycle"), (33, 18, "bicycle"),
)
CLASS_NAMES: tuple[str, ...] = tuple(name for _, _, name in TRAIN_CLASSES)
IMAGE_SUFFIX = "_leftImg8bit.png"


def id_to_train_id_table() -> np.ndarray:
    """(256,) uint8 lookup: labelId -> trainId, 255 for everything not evaluated."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id, _ in TRAIN_CLASSES:
        table[label_id] = train_id
    return table


ID_TO_TRAIN_ID = id_to_train_id_table()


def map_label_ids(raw: np.ndarray) -> np.ndarray:
    return ID_TO_TRAIN_ID[raw.astype(np.uint8)]


def keep_train_ids(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.uint8)


def list_samples(root: Path, split: str, prefer_train_ids: bool) -> tuple[list[Sample], bool]:
    """Image/label pairs of a split and whether the labels are ready trainIds."""
    img_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes images (leftImg8bit/<split>)")
    gt_dir = require_dir(root / "gtFine" / split, "Cityscapes labels (gtFine/<split>)")
    images = sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DatasetError(f"no *{IMAGE_SUFFIX} files under {img_dir}/<city>/")
    stems = [(p.parent.name, p.name[: -len(IMAGE_SUFFIX)]) for p in images]
    train_ids = prefer_train_ids and all((gt_dir / c / f"{s}_gtFine_labelTrainIds.png").is_file() for c, s in stems)
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    samples = [Sample(img, gt_dir / c / f"{s}{suffix}") for img, (c, s) in zip(images, stems, strict=True)]
    missing = [s.label for s in samples if not s.label.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(samples)} Cityscapes labels missing, e.g. {missing[0]}")
    return samples, train_ids


def cityscapes_dataset(cfg: DataConfig, split: str, train: bool) -> SegmentationDataset:
    root = require_dir(Path(cfg.root), "Cityscapes root")
    samples, train_ids = list_samples(root, split, cfg.prefer_train_ids)
    return SegmentationDataset(samples, keep_train_ids if train_ids else map_label_ids, cfg, train)
