"""Augmentation and normalization on numpy arrays (HWC uint8 image, HW uint8 label).

Every random choice comes from the ``np.random.Generator`` passed in, so a sample is a pure function
of (index, seed): data-loader workers and resumed runs see exactly the same crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from search_client.config import IGNORE_INDEX

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` = (H, W): bilinear for the image, nearest for the label (ids must stay ids)."""
    h, w = size
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    lbl = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return img, lbl


def random_scale(
    image: np.ndarray, label: np.ndarray, scales: Sequence[float], mode: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    scale = float(rng.choice(scales)) if mode == "choice" else float(rng.uniform(min(scales), max(scales)))
    h, w = label.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize_pair(image, label, size) if size != (h, w) else (image, label)


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to ``size``; padded label pixels are ignored (255), padded image pixels 0."""
    h, w = label.shape
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Crop of ``size`` (padding first when smaller) and the (rows, cols) of real image in the crop's top-left."""
    h0, w0 = label.shape
    image, label = pad_to(image, label, size)
    h, w = label.shape
    top = int(rng.integers(0, h - size[0] + 1))
    left = int(rng.integers(0, w - size[1] + 1))
    real = (min(size[0], h0 - top), min(size[1], w0 - left))
    return image[top : top + size[0], left : left + size[1]], label[top : top + size[0], left : left + size[1]], real


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s]."""
    if strength <= 0:
        return image
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    img = image.astype(np.float32) * b
    img = (img - img.mean()) * c + img.mean()
    gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - gray[..., None]) * s + gray[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) float32 normalized with ImageNet statistics, (H, W) int64 label."""
    img = (image.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(label.astype(np.int64))


def train_transform(
    image: np.ndarray,
    label: np.ndarray,
    *,
    crop: tuple[int, int],
    scales: Sequence[float],
    scale_mode: str,
    flip: bool,
    jitter: float,
    base_size: tuple[int, int] | None,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    if base_size is not None:
        image, label = resize_pair(image, label, base_size)
    image, label = random_scale(image, label, scales, scale_mode, rng)
    image, label, (rows, cols) = random_crop(image, label, crop, rng)
    image = image.copy()
    # Jitter the real pixels only: padding stays black, as at the image border of any other sample.
    image[:rows, :cols] = color_jitter(image[:rows, :cols], jitter, rng)
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return to_tensors(image, label)


def eval_transform(
    image: np.ndarray, label: np.ndarray, eval_size: tuple[int, int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image resized to the inference resolution; the label stays at its stored size."""
    if eval_size is not None and image.shape[:2] != tuple(eval_size):
        image = np.asarray(Image.fromarray(image).resize((eval_size[1], eval_size[0]), Image.BILINEAR))
    return to_tensors(image, label)
