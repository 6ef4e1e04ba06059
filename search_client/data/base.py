"""Common dataset machinery: a list of (image, label) files, a label mapping, train/eval transforms."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from search_client.config import DataConfig
from search_client.data.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)

LabelMap = Callable[[np.ndarray], np.ndarray]


class DatasetError(ValueError):
    """A dataset folder that is missing or malformed; the message names what is missing."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} is missing or not a folder")
    return path


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one sample's augmentation: a function of (run seed, epoch, index) only."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SegmentationDataset(Dataset):
    """Files + label mapping + transform. Items: ``(image (3,H,W) float32, label (H,W) int64)``.

    In training mode an item key is ``(index, seed)`` (see ``train.sampler``) or a plain index (seed 0);
    the augmentation uses only that seed, so data order and crops survive a resume exactly.
    """

    def __init__(self, samples: Sequence[Sample], label_map: LabelMap, cfg: DataConfig, train: bool):
        if not samples:
            raise DatasetError("dataset has no samples")
        self.samples = list(samples)
        self.label_map = label_map
        self.cfg = cfg
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (H, W, 3) uint8 image and (H, W) uint8 label in training ids (255 = ignore)."""
        sample = self.samples[index]
        image = np.asarray(Image.open(sample.image).convert("RGB"))
        raw = np.asarray(Image.open(sample.label))
        if raw.ndim != 2:
            raise DatasetError(f"label {sample.label} must be a single-channel id image, got shape {raw.shape}")
        if raw.shape != image.shape[:2]:
            raise DatasetError(f"label {sample.label} is {raw.shape}, image {sample.image} is {image.shape[:2]}")
        return image, self.label_map(raw)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        image, label = self.load(index)
        if not self.train:
            return eval_transform(image, label, self.cfg.eval_size)
        c = self.cfg
        return train_transform(
            image, label, crop=c.crop, scales=c.scales, scale_mode=c.scale_mode, flip=c.flip,
            jitter=c.color_jitter, base_size=c.base_size, rng=np.random.default_rng(seed),
        )
