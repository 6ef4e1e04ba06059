"""Procedural street scenes written in the Cityscapes layout (labelIds), so the Cityscapes loader serves
tests and the demo without the real dataset.

A scene: sky over a horizon, buildings with windows, trees, a road in perspective with sidewalks, cars,
people, poles with traffic signs, and ignored ids (ego vehicle 1, static 4, dynamic 5, ground 6) that
the loader must map to 255. Colours are class colours with per-image shifts and pixel noise, so a model
has to learn something, but a small one can within minutes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

# labelId -> base RGB colour (Cityscapes palette, used for the image, not the label).
COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (30, 30, 40), 4: (110, 90, 60), 5: (150, 60, 160), 6: (81, 0, 81),
    7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 17: (153, 153, 153), 20: (220, 220, 0),
    21: (107, 142, 35), 22: (152, 251, 152), 23: (70, 130, 180), 24: (220, 20, 60), 26: (0, 0, 142),
}
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 7, 8, 11, 17, 20, 21, 22, 23, 24, 26
EGO, STATIC, DYNAMIC, GROUND = 1, 4, 5, 6
SPLIT_CITIES = {"train": ("synthburg", "procville"), "val": ("testford",)}


@dataclass(frozen=True)
class SyntheticSpec:
    train: int = 40
    val: int = 10
    height: int = 256
    width: int = 512
    seed: int = 0


def _draw_background(d: ImageDraw.ImageDraw, h: int, w: int, horizon: int, rng: np.random.Generator) -> None:
    d.rectangle([0, 0, w, horizon], fill=SKY)
    x = int(rng.integers(-w // 20, w // 20))
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.integers(h // 20, max(h // 20 + 1, horizon - h // 10)))
        if rng.random() < 0.85:
            d.rectangle([x, top, x + bw, horizon], fill=BUILDING)
        x += bw + int(rng.integers(0, w // 20))
    for _ in range(int(rng.integers(1, 5))):
        cx, r = int(rng.integers(0, w)), int(rng.integers(h // 16, h // 6))
        d.rectangle([cx - r // 6, horizon - r, cx + r // 6, horizon + r // 2], fill=VEGETATION)
        d.ellipse([cx - r, horizon - 2 * r, cx + r, horizon - r // 2], fill=VEGETATION)


def _draw_ground(d: ImageDraw.ImageDraw, h: int, w: int, horizon: int, rng: np.random.Generator) -> tuple[int, int]:
    d.rectangle([0, horizon, w, h], fill=SIDEWALK)
    vx = int(w * rng.uniform(0.35, 0.65))
    left, right = int(w * rng.uniform(-0.3, 0.15)), int(w * rng.uniform(0.85, 1.3))
    d.polygon([(vx - w // 40, horizon), (vx + w // 40, horizon), (right, h), (left, h)], fill=ROAD)
    if rng.random() < 0.5:
        d.polygon([(0, horizon + (h - horizon) // 3), (left // 2 + w // 10, h), (0, h)], fill=TERRAIN)
    if rng.random() < 0.5:
        gx = int(rng.integers(0, w))
        d.rectangle([gx, horizon, gx + w // 12, horizon + (h - horizon) // 6], fill=GROUND)
    return left, right


def _draw_objects(d: ImageDraw.ImageDraw, h: int, w: int, horizon: int, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(1, 4))):  # poles with signs on the sidewalks
        px = int(rng.choice([rng.integers(0, w // 6), rng.integers(5 * w // 6, w)]))
        base, pw = int(rng.integers(horizon + (h - horizon) // 4, h)), max(2, w // 120)
        top = max(0, base - (base - horizon) * 3)
        d.rectangle([px, top, px + pw, base], fill=POLE)
        d.rectangle([px - 3 * pw, top, px + 4 * pw, top + 5 * pw], fill=SIGN)
    for _ in range(int(rng.integers(1, 5))):  # cars, larger when nearer (lower)
        y = int(rng.integers(horizon + 4, h))
        size = max(4, int((y - horizon) / (h - horizon) * w / 5))
        x = int(rng.integers(w // 5, 4 * w // 5))
        d.rectangle([x - size // 2, y - size // 2, x + size // 2, y], fill=CAR)
        d.rectangle([x - size // 3, y - size * 3 // 4, x + size // 3, y - size // 2], fill=CAR)
    for _ in range(int(rng.integers(0, 4))):  # people on the sidewalks
        y = int(rng.integers(horizon + 4, h))
        ph = max(6, int((y - horizon) / (h - horizon) * h / 3))
        x = int(rng.choice([rng.integers(0, w // 5), rng.integers(4 * w // 5, w)]))
        d.ellipse([x - ph // 6, y - ph, x + ph // 6, y], fill=PERSON)
    if rng.random() < 0.5:
        sx, sy = int(rng.integers(0, w)), int(rng.integers(horizon, h))
        d.rectangle([sx, sy, sx + w // 25, sy + h // 25], fill=STATIC if rng.random() < 0.5 else DYNAMIC)
    d.rectangle([0, h - int(h * rng.uniform(0.03, 0.1)), w, h], fill=EGO)


def render_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 labelIds of one scene."""
    label = Image.new("L", (width, height), 0)
    d = ImageDraw.Draw(label)
    horizon = int(height * rng.uniform(0.35, 0.5))
    _draw_background(d, height, width, horizon, rng)
    _draw_ground(d, height, width, horizon, rng)
    _draw_objects(d, height, width, horizon, rng)
    ids = np.asarray(label)
    lut = np.zeros((256, 3), dtype=np.float32)
    for label_id, colour in COLOURS.items():
        lut[label_id] = np.clip(np.array(colour) + rng.normal(0, 12, 3), 0, 255)
    image = lut[ids] * rng.uniform(0.7, 1.2) + rng.normal(0, 10, ids.shape + (3,))
    windows = (ids == BUILDING) & ((np.arange(height)[:, None] // 6 % 3 == 0) & (np.arange(width)[None] // 5 % 3 == 0))
    image[windows] *= 0.6
    return np.clip(image, 0, 255).astype(np.uint8), ids


def write_split(out: Path, split: str, count: int, spec: SyntheticSpec, split_index: int) -> None:
    cities = SPLIT_CITIES[split]
    for i in range(count):
        city = cities[i % len(cities)]
        rng = np.random.default_rng([spec.seed, split_index, i])
        image, ids = render_scene(spec.height, spec.width, rng)
        stem = f"{city}_{i:06d}_000019"
        img_dir, gt_dir = out / "leftImg8bit" / split / city, out / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")


def make_synthetic(out: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write ``spec.train`` + ``spec.val`` scenes under ``out`` in the Cityscapes layout; returns ``out``."""
    out = Path(out)
    if spec.height < 32 or spec.width < 32:
        raise ValueError(f"synthetic images must be at least 32x32, got {spec.height}x{spec.width}")
    for index, (split, count) in enumerate((("train", spec.train), ("val", spec.val))):
        write_split(out, split, count, spec, index)
    (out / "synthetic.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
    log.info("wrote %d train + %d val synthetic scenes (%dx%d) to %s", spec.train, spec.val, spec.height, spec.width, out)
    return out
