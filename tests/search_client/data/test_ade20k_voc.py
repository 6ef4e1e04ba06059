"""ADE20K and Pascal VOC loaders on small folders in their official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_client.config import build_config
from search_client.data import DatasetError, build_dataset


def _write(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if palette:
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        img = Image.fromarray(array, mode="L").convert("P")
    img.save(path)


def _cfg(kind: str, root: Path):
    return build_config(None, {"data": {"kind": kind, "root": str(root), "eval_size": None}})


def test_ade20k_shifts_classes_and_ignores_other(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    ann = np.array([[0, 1, 2], [150, 75, 0]], dtype=np.uint8)
    _write(root / "images" / "validation" / "ADE_val_00000001.jpg", np.zeros((2, 3, 3), np.uint8))
    _write(root / "annotations" / "validation" / "ADE_val_00000001.png", ann)
    ds = build_dataset(_cfg("ade20k", tmp_path).data, "val", train=False)
    assert ds[0][1].tolist() == [[255, 0, 1], [149, 74, 255]]


def test_ade20k_missing_annotations_named(tmp_path: Path) -> None:
    _write(tmp_path / "images" / "training" / "a.jpg", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="ADE20K annotations"):
        build_dataset(_cfg("ade20k", tmp_path).data, "train", train=True)


def _voc(root: Path, ids: list[str]) -> None:
    seg = root / "VOC2012"
    (seg / "ImageSets" / "Segmentation").mkdir(parents=True)
    (seg / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(i + "\n" for i in ids))
    for i in ids:
        _write(seg / "JPEGImages" / f"{i}.jpg", np.full((3, 4, 3), 100, np.uint8))
        _write(seg / "SegmentationClass" / f"{i}.png", np.array([[0, 15, 255, 20]] * 3, np.uint8), palette=True)


def test_voc_keeps_class_indices_and_border(tmp_path: Path) -> None:
    _voc(tmp_path / "VOCdevkit", ["2007_000032"])
    ds = build_dataset(_cfg("voc", tmp_path / "VOCdevkit").data, "val", train=False)
    assert ds.cfg.num_classes == 21
    assert ds[0][1][0].tolist() == [0, 15, 255, 20]


def test_voc_missing_split_file_named(tmp_path: Path) -> None:
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match=r"split file missing: .*train\.txt"):
        build_dataset(_cfg("voc", tmp_path).data, "train", train=True)
