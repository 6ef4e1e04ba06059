"""Adaptive sampling (nn-Meter style): measure next where the latest predictor errs most.

The latest ready predictor of a (device class, runtime) is run on every config measured there;
the configs it misses by more than 10 % (worst first) each take, in turn, the nearest unmeasured
candidate of a uniform pool drawn from the space (standardized features). Choosing uses only
the candidates' features, never a measurement of them.
"""

from __future__ import annotations

import numpy as np
import torch
from sqlalchemy.orm import Session

from profiler_server.errors import Conflict
from profiler_server.predictor import store
from profiler_server.predictor.fit import prepare_dataset
from shared.config import AnyBlock
from shared.encoding import encode_blocks
from shared.predictor import load_predictor
from shared.space import SearchSpace, sample_uniform

POOL_FACTOR = 10  # candidates drawn per config asked for
MAX_POOL = 20_000
MISS = 0.10  # a config predicted further off than this is one to sample around
MIN_WORST = 20  # when fewer configs miss, sample around this many of the worst anyway


def worst_first(errors: np.ndarray) -> list[int]:
    """Indices of the configs missed by more than ``MISS``, worst first; the ``MIN_WORST`` worst when none is."""
    order = np.argsort(-errors)
    return [int(i) for i in order if errors[i] > MISS] or [int(i) for i in order[:MIN_WORST]]


def near_worst(worst_x: np.ndarray, candidates_x: np.ndarray, budget: int) -> list[int]:
    """Indices of ``budget`` candidates: round robin over ``worst_x`` (worst first), each taking
    its nearest candidate not yet taken, in features standardized over the candidates."""
    mean, std = candidates_x.mean(0), candidates_x.std(0) + 1e-6
    z = (candidates_x - mean) / std
    targets = (worst_x - mean) / std
    budget = min(budget, len(z))
    taken = np.zeros(len(z), dtype=bool)
    picks: list[int] = []
    while len(picks) < budget:
        for target in targets:
            dist = np.linalg.norm(z - target, axis=1)
            dist[taken] = np.inf
            j = int(np.argmin(dist))
            taken[j] = True
            picks.append(j)
            if len(picks) == budget:
                break
    return picks


def adaptive_configs(
    session: Session, device_class: str, runtime: str, space: SearchSpace, n: int, seed: int = 0
) -> list[AnyBlock]:
    """``n`` unmeasured configs of ``space`` nearest to where the latest predictor errs most."""
    row = store.latest_ready(session, device_class, runtime)
    if row is None:
        raise Conflict(
            f"adaptive sampling needs a ready predictor for {device_class!r} with {runtime!r}: "
            "run a stratified or uniform campaign first"
        )
    statistic = (row.metrics or {}).get("statistic", "median_ms")
    data = prepare_dataset(*store.training_rows(session, device_class, runtime, statistic))
    with torch.no_grad():
        err = np.abs(load_predictor(row.blob).model(data.x).double().numpy() / data.y_ms - 1)
    worst = worst_first(err)
    measured = set(data.keys)
    pool = [c for c in sample_uniform(space, min(POOL_FACTOR * n, MAX_POOL), seed) if c.key() not in measured]
    if not pool:
        raise Conflict("every config this space offers is measured already")
    picks = near_worst(data.x[worst].numpy(), encode_blocks(pool).numpy(), n)
    return [pool[i] for i in picks]
