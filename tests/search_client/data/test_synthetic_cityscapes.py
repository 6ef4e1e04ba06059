"""The synthetic generator writes the Cityscapes layout and the Cityscapes loader reads it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search_client.config import build_config
from search_client.data import DatasetError, build_dataset
from search_client.data.cityscapes import ID_TO_TRAIN_ID
from search_client.data.synthetic import SyntheticSpec, make_synthetic, render_scene


def _cfg(root: Path, **data):
    return build_config("synthetic-cpu", {"data": {"root": str(root), "eval_size": None, **data}})


def test_layout_and_file_names(synthetic_root: Path) -> None:
    images = sorted((synthetic_root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    labels = sorted((synthetic_root / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))
    assert len(images) == len(labels) == 8
    assert {p.parent.name for p in images} == {"synthburg", "procville"}
    assert Image.open(images[0]).size == (128, 64) and Image.open(labels[0]).mode == "L"


def test_label_ids_round_trip_to_train_ids(synthetic_root: Path) -> None:
    ds = build_dataset(_cfg(synthetic_root).data, "val", train=False)
    seen_ids: set[int] = set()
    for i, sample in enumerate(ds.samples):
        ids = np.asarray(Image.open(sample.label))
        seen_ids |= set(np.unique(ids).tolist())
        _, label = ds[i]
        expected = ID_TO_TRAIN_ID[ids]
        assert np.array_equal(label.numpy(), expected)
        # the ego-vehicle strip (id 1) is ignored, road (7) is train id 0, sky (23) is 10
        assert (label.numpy()[ids == 1] == 255).all()
        assert (label.numpy()[ids == 7] == 0).all() and (label.numpy()[ids == 23] == 10).all()
    assert {1, 7, 8, 11, 23}.issubset(seen_ids)


def test_scenes_are_deterministic_and_varied() -> None:
    a_img, a_ids = render_scene(64, 128, np.random.default_rng(1))
    b_img, b_ids = render_scene(64, 128, np.random.default_rng(1))
    c_img, c_ids = render_scene(64, 128, np.random.default_rng(2))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_ids, b_ids)
    assert not np.array_equal(a_ids, c_ids)


def test_ready_train_id_files_are_used_when_preferred(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path / "s", SyntheticSpec(train=1, val=1, height=32, width=64))
    ids_file = next((root / "gtFine" / "val").glob("*/*_labelIds.png"))
    ready = np.full((32, 64), 5, dtype=np.uint8)
    Image.fromarray(ready).save(str(ids_file).replace("_labelIds", "_labelTrainIds"))
    ds = build_dataset(_cfg(root, prefer_train_ids=True).data, "val", train=False)
    assert (ds[0][1].numpy() == 5).all()


def test_missing_labels_folder_is_named(synthetic_root: Path, tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"gtFine/<split>"):
        build_dataset(_cfg(tmp_path).data, "train", train=True)
    with pytest.raises(DatasetError, match="Cityscapes root not found"):
        build_dataset(_cfg(tmp_path / "nowhere").data, "train", train=True)


def test_missing_label_file_is_named(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path / "s", SyntheticSpec(train=2, val=1, height=32, width=64))
    victim = sorted((root / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
    victim.unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 Cityscapes labels missing, e.g. .*" + victim.name):
        build_dataset(_cfg(root).data, "train", train=True)
