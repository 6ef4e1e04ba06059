"""Our labelId -> trainId table against the official one shipped by cityscapesscripts."""

from __future__ import annotations

import pytest

from search_client.data.cityscapes import CLASS_NAMES, ID_TO_TRAIN_ID

labels_module = pytest.importorskip("cityscapesscripts.helpers.labels", reason="test extra: cityscapesscripts")


def test_every_official_label_maps_like_ours() -> None:
    for label in labels_module.labels:
        if label.id < 0:  # license plate (-1) is not stored in labelIds images
            continue
        expected = 255 if label.trainId in (-1, 255) else label.trainId
        assert ID_TO_TRAIN_ID[label.id] == expected, label.name


def test_class_names_follow_official_train_ids() -> None:
    official = {lb.trainId: lb.name for lb in labels_module.labels if 0 <= lb.trainId < 255}
    assert CLASS_NAMES == tuple(official[i] for i in range(19))


def test_ids_outside_the_table_are_ignored() -> None:
    assert (ID_TO_TRAIN_ID[34:] == 255).all()
