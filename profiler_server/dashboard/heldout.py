"""A predictor version's predicted-vs-measured points on its held-out test split.

The split is fixed by config hash (``fit.split_by_key``), so the configs held out of a version's
training are known without storing them: the points are the test-split configs measured now,
labelled with the statistic that version learned, predicted by that version's weights. That is the
split the version's stored metrics come from, plus any test-split config measured since (equally
unseen by that version).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy.orm import Session

from profiler_server.db import PredictorVersion
from profiler_server.predictor import store
from profiler_server.predictor.fit import NotEnoughData, predict_ms, prepare_dataset, split_by_key
from shared.predictor import load_predictor

MAX_POINTS = 2000  # a plot of more points says nothing more and costs the browser
RECOMPUTE_S = 60.0  # while a campaign runs, new test-split points appear at most this often
_cache: dict[int, tuple[float, dict[str, Any] | None]] = {}
_lock = threading.Lock()


def held_out_points(session: Session, row: PredictorVersion) -> dict[str, Any] | None:
    """``{"statistic", "measured_ms", "predicted_ms"}`` of the version's test split, or None when
    the version has no weights or no test point; recomputed at most once a minute per version."""
    if row.state != "ready" or row.blob is None:
        return None
    now = time.monotonic()
    with _lock:
        hit = _cache.get(row.id)
    if hit is not None and now - hit[0] < RECOMPUTE_S:
        return hit[1]
    points = _compute(session, row)
    with _lock:
        _cache[row.id] = (now, points)
    return points


def _compute(session: Session, row: PredictorVersion) -> dict[str, Any] | None:
    statistic = (row.metrics or {}).get("statistic", "median_ms")
    rows = store.training_rows(session, row.device_class, row.runtime, statistic)
    # a network's config can be stored as JSON null, which the SQL filter lets through
    pairs = [(c, ms) for c, ms in zip(*rows, strict=True) if c is not None]
    configs, latencies = [c for c, _ in pairs], [ms for _, ms in pairs]
    if not configs:
        return None
    try:
        data = prepare_dataset(configs, latencies)
    except (NotEnoughData, ValueError):
        return None
    test = split_by_key(data.keys, seed=0).test[:MAX_POINTS]
    if len(test) == 0:
        return None
    predicted = predict_ms(load_predictor(row.blob).model, data.x[test])
    return {"statistic": statistic, "measured_ms": data.y_ms[test].tolist(), "predicted_ms": predicted.tolist()}
