"""The network-level correction of each predictor version: fitted with the version, refitted (no
MLP retraining, a few least-squares solves) when the farm has measured new networks since.

The correction lives in the version's metrics (``metrics.network_correction``, with its revision,
the number of networks and its leave-one-out figures), so it is versioned with the predictor and
listed by ``GET /v1/predictors``. Whether new networks arrived is checked at most every
``CHECK_S`` seconds per version, when a correction is asked for (``POST /v1/predict`` with
``"network": true`` or ``GET /v1/predictors/{id}/network-correction``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from profiler_server.db import Database, PredictorVersion
from profiler_server.predictor import store
from profiler_server.predictor.network_fit import fit_network_correction
from shared.config import AnyBlock, parse_blocks
from shared.network_correction import NetworkCorrection, aggregate_features


class Loaded(Protocol):
    """What a served predictor version (``service.Loaded``) offers its correction."""

    id: int
    correction: NetworkCorrection
    answers: dict[bytes, str]

    def predict_blocks(self, blocks: Sequence[AnyBlock]) -> tuple[list[float], list[bool]]:
        """Per-block predicted ms and whether each lies outside the trained ranges."""


log = logging.getLogger(__name__)
CHECK_S = 5.0  # default of NetworkCorrections.check_s
BlockPredictor = Callable[[Sequence[AnyBlock]], Sequence[float]]


def stored_correction(metrics: dict | None) -> NetworkCorrection:
    """The correction recorded in a version's metrics (versions fitted before it existed: the sum)."""
    raw = (metrics or {}).get("network_correction")
    if raw is None:
        return NetworkCorrection(fallback="this predictor version was fitted without a network-level correction")
    return NetworkCorrection.model_validate(raw)


def fit_on_stored_networks(
    session: Session, predict_blocks: BlockPredictor, device_class: str, runtime: str, statistic: str,
    revision: int = 0,
) -> NetworkCorrection:
    """Fit on every stored network of (device class, runtime), each summed by ``predict_blocks``."""
    block_lists, measured = store.network_rows(session, device_class, runtime, statistic)
    features = []
    for raw in block_lists:
        blocks = parse_blocks(raw)
        features.append(aggregate_features(float(sum(predict_blocks(blocks))), blocks))
    unstable = store.count_unstable_networks(session, device_class, runtime)
    return fit_network_correction(features, measured, revision, n_unstable=unstable)


class NetworkCorrections:
    """Keeps the loaded versions' corrections current (thread-safe; call off the event loop)."""

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._checked: dict[int, float] = {}  # predictor id -> when its network count was last read
        self._seen: dict[int, tuple[int, int]] = {}  # predictor id -> (stable, unstable) networks at its last refit
        self.check_s = CHECK_S  # how long a version's network count is trusted

    def current(self, loaded: Loaded) -> NetworkCorrection:
        """``loaded``'s correction, refitted first when networks were measured since its last fit."""
        now = time.monotonic()
        if now - self._checked.get(loaded.id, float("-inf")) < self.check_s:
            return loaded.correction
        with self._lock:
            self._checked[loaded.id] = now
            with self.db.transaction() as session:
                row = session.get(PredictorVersion, loaded.id)
                count = (store.count_networks(session, row.device_class, row.runtime),
                         store.count_unstable_networks(session, row.device_class, row.runtime))
                known = (loaded.correction.n_networks, loaded.correction.n_unstable)
                if count == self._seen.get(loaded.id, known):
                    return loaded.correction
                self.refit(session, row, loaded)
                self._seen[loaded.id] = count
        return loaded.correction

    def refit(self, session: Session, row: PredictorVersion, loaded: Loaded) -> None:
        """Refit on the stored networks, record it in the row's metrics and serve it from ``loaded``."""
        statistic = (row.metrics or {}).get("statistic", "p10_ms")
        old = loaded.correction
        fresh = fit_on_stored_networks(session, lambda b: loaded.predict_blocks(b)[0], row.device_class,
                                       row.runtime, statistic, revision=old.revision + 1)
        row.metrics = {**(row.metrics or {}), "network_correction": fresh.model_dump()}
        loaded.correction = fresh
        loaded.answers.clear()  # remembered answers of network requests used the old correction
        log.info("predictor %d: network correction refitted on %d networks (%s)", row.id, fresh.n_networks,
                 fresh.model)
