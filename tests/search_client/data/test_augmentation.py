"""Augmentation: ignore padding, label ids preserved, determinism per seed."""

from __future__ import annotations

import numpy as np

from search_client.data.transforms import MEAN, STD, color_jitter, random_crop, train_transform


def _pair(h: int = 20, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (h, w, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 7], dtype=np.uint8), size=(h, w))
    return image, label


def test_crop_larger_than_image_pads_label_with_ignore() -> None:
    image, label = _pair()
    img, lbl, real = random_crop(image, label, (32, 48), np.random.default_rng(0))
    assert real == (20, 30)
    assert img.shape == (32, 48, 3) and lbl.shape == (32, 48)
    assert (lbl[20:] == 255).all() and (lbl[:, 30:] == 255).all()
    assert (img[20:] == 0).all()
    assert np.array_equal(lbl[:20, :30], label)  # the original sits top-left, untouched


def test_train_transform_keeps_ids_and_padding() -> None:
    image, label = _pair()
    x, y = train_transform(image, label, crop=(48, 64), scales=(0.5, 0.75), scale_mode="choice", flip=True,
                           jitter=0.3, base_size=None, rng=np.random.default_rng(4))
    assert x.shape == (3, 48, 64) and y.shape == (48, 64)
    assert set(np.unique(y.numpy()).tolist()) <= {0, 3, 7, 255}
    assert (y.numpy() == 255).sum() >= 48 * 64 - 15 * 23  # scaled image is at most 15x23: the rest is padding
    # padded image pixels are black before normalization
    pad = y.numpy() == 255
    black = (0 - MEAN) / STD
    assert np.allclose(x.numpy().transpose(1, 2, 0)[pad], black, atol=1e-5)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    image, label = _pair(64, 96)
    kw = dict(crop=(32, 32), scales=(0.5, 1.0, 2.0), scale_mode="choice", flip=True, jitter=0.4, base_size=None)
    a = train_transform(image, label, rng=np.random.default_rng(7), **kw)
    b = train_transform(image, label, rng=np.random.default_rng(7), **kw)
    c = train_transform(image, label, rng=np.random.default_rng(8), **kw)
    assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_color_jitter_changes_colours_only() -> None:
    image, _ = _pair()
    out = color_jitter(image, 0.4, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    assert np.array_equal(color_jitter(image, 0.0, np.random.default_rng(1)), image)
