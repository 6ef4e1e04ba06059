"""Accuracy figures of a latency predictor, the way nn-Meter / LitePred report them.

All errors are relative: ``(predicted - measured) / measured``. Shares are fractions in [0, 1],
percentages (MAPE, RMSPE, p95) are in percent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import spearmanr


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> np.ndarray:
    pred = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(measured, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1 or len(pred) == 0:
        raise ValueError(f"need two equal-length non-empty 1-D sequences, got {pred.shape} and {true.shape}")
    if np.any(true <= 0):
        raise ValueError("measured latencies must be positive")
    return (pred - true) / true


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return float(np.mean(np.abs(relative_errors(predicted, measured))) * 100)


def rmspe(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return float(np.sqrt(np.mean(relative_errors(predicted, measured) ** 2)) * 100)


def within(predicted: Sequence[float], measured: Sequence[float], tolerance: float) -> float:
    """Share of predictions within ``±tolerance`` (0.10 = ±10 %) of the measurement."""
    # a hair of slack so that an error of exactly 10 % counts as within 10 % despite float rounding
    return float(np.mean(np.abs(relative_errors(predicted, measured)) <= tolerance + 1e-12))


def p95_error(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return float(np.percentile(np.abs(relative_errors(predicted, measured)), 95) * 100)


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> float:
    if len(predicted) < 2:
        return float("nan")
    rho = spearmanr(predicted, measured).statistic
    return float(rho)


def noise_floor(keys: Iterable[str], latencies_ms: Iterable[float]) -> dict:
    """Measurement noise from configs measured more than once.

    For each re-measured config: median over pairs of ``|a - b| / mean(a, b)`` of its repeated
    medians against their first value. Returns the median and p95 across configs (percent) and how
    many configs were repeated; ``None`` figures when nothing was re-measured.
    """
    groups: dict[str, list[float]] = defaultdict(list)
    for key, ms in zip(keys, latencies_ms, strict=True):
        groups[key].append(float(ms))
    spreads = []
    for values in groups.values():
        if len(values) < 2:
            continue
        first = values[0]
        spreads.append(float(np.median([abs(v - first) / ((v + first) / 2) for v in values[1:]])))
    if not spreads:
        return {"median_pct": None, "p95_pct": None, "n_repeated": 0}
    return {
        "median_pct": float(np.median(spreads) * 100),
        "p95_pct": float(np.percentile(spreads, 95) * 100),
        "n_repeated": len(spreads),
    }


def accuracy_report(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Every headline figure at once (what each predictor version stores)."""
    return {
        "mape": mape(predicted, measured),
        "rmspe": rmspe(predicted, measured),
        "within_5": within(predicted, measured, 0.05),
        "within_10": within(predicted, measured, 0.10),
        "spearman": spearman(predicted, measured),
        "p95_error": p95_error(predicted, measured),
    }
