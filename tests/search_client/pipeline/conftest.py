"""Session fixtures of the pipeline tests: tiny synthetic data and a predictor fitted on the tiny space."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_client.data.synthetic import SyntheticSpec, make_synthetic
from shared.predictor import LatencyMLP
from tests.search_client.pipeline.tiny import macs_proxy_predictor


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), SyntheticSpec(train=4, val=2, height=64, width=128))


@pytest.fixture(scope="session")
def proxy_predictor() -> LatencyMLP:
    return macs_proxy_predictor()
