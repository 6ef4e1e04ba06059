"""Segmentation datasets (Cityscapes, ADE20K, Pascal VOC), augmentation and the synthetic generator.

``build_dataset(cfg, split, train)`` is the one entry point; every dataset yields
``(image (3, H, W) float32, label (H, W) int64)`` with 255 = ignore.
"""

from __future__ import annotations

from search_client.config import DataConfig
from search_client.data.ade20k import ade20k_dataset
from search_client.data.base import DatasetError, SegmentationDataset
from search_client.data.cityscapes import CLASS_NAMES as CITYSCAPES_CLASSES
from search_client.data.cityscapes import cityscapes_dataset
from search_client.data.voc import CLASS_NAMES as VOC_CLASSES
from search_client.data.voc import voc_dataset

__all__ = ["DatasetError", "SegmentationDataset", "build_dataset", "class_names"]

_BUILDERS = {"cityscapes": cityscapes_dataset, "ade20k": ade20k_dataset, "voc": voc_dataset}


def build_dataset(cfg: DataConfig, split: str, train: bool) -> SegmentationDataset:
    """The dataset of ``cfg.kind`` at ``cfg.root``; raises DatasetError naming what is missing."""
    return _BUILDERS[cfg.kind](cfg, split, train)


def class_names(kind: str) -> tuple[str, ...]:
    if kind == "cityscapes":
        return CITYSCAPES_CLASSES
    if kind == "voc":
        return VOC_CLASSES
    return tuple(f"class_{i}" for i in range(150))
