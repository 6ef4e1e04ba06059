"""Fixtures of the search client tests: one small synthetic Cityscapes-layout dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_client.data.synthetic import SyntheticSpec, make_synthetic


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train + 2 val scenes of 64x128 (seconds to write, enough for a few batches)."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), SyntheticSpec(train=8, val=2, height=64, width=128, seed=3))
