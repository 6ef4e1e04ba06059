"""Turn raw timings into :class:`shared.schemas.MeasurementStats`, and re-measure noisy runs.

Host runs keep every per-run sample. The on-device tools only print a summary; there, p10/p90/std
are taken from the tool when it prints them and otherwise estimated from a normal fit (the flag
``estimated:<fields>`` says which), so a row always says how it was obtained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from android_harness.parsers import BenchmarkSummary
from shared.schemas import MeasurementStats

log = logging.getLogger(__name__)

Z90 = 1.2815515655446004  # standard normal quantile at 0.9
DEFAULT_MAX_SPREAD = 0.35  # (p90 - p10) / median above this is "far above normal" for a quiet device
DEFAULT_MAX_ATTEMPTS = 3
_MIN_MS = 1e-6  # MeasurementStats requires strictly positive times


def summarize_samples(samples_ms: Sequence[float], **meta: Any) -> MeasurementStats:
    """Statistics of per-run samples (ms); ``meta`` fills the other MeasurementStats fields."""
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarize")
    arr = np.asarray(samples_ms, dtype=np.float64)
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return MeasurementStats(
        median_ms=max(float(median), _MIN_MS),
        mean_ms=max(float(arr.mean()), _MIN_MS),
        p10_ms=max(float(p10), _MIN_MS),
        p90_ms=max(float(p90), _MIN_MS),
        std_ms=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        runs=int(arr.size),
        samples_ms=[float(x) for x in arr],
        **meta,
    )


def _estimated_std(s: BenchmarkSummary, median: float) -> float | None:
    pct = s.percentiles_ms
    if 90 in pct:
        return max(pct[90] - median, 0.0) / Z90
    if 5 in pct and 95 in pct:
        return max(pct[95] - pct[5], 0.0) / (2 * 1.6448536269514722)
    return None


def _clip(value: float, low: float | None, high: float | None) -> float:
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return max(value, _MIN_MS)


def summary_stats(summary: BenchmarkSummary, **meta: Any) -> MeasurementStats:
    """Statistics from a tool's printed summary (no per-run samples on the device tools)."""
    pct = summary.percentiles_ms
    median = summary.median_ms or pct.get(50) or summary.avg_ms
    estimated: list[str] = []
    std = summary.std_ms
    if std is None:
        std = _estimated_std(summary, median)
        estimated.append("std")
    spread = Z90 * (std or 0.0)
    if 50 not in pct and summary.median_ms is None:
        estimated.append("median")
    p10 = pct.get(10)
    if p10 is None:
        p10 = _clip(median - spread, summary.min_ms, median)
        estimated.append("p10")
    p90 = pct.get(90)
    if p90 is None:
        p90 = _clip(median + spread, median, summary.max_ms)
        estimated.append("p90")
    flags = list(meta.pop("flags", []))
    if estimated:
        flags.append("estimated:" + ",".join(estimated))
    if summary.delegate_fallback:
        flags.append("delegate-fallback")
    return MeasurementStats(
        median_ms=max(median, _MIN_MS),
        mean_ms=max(summary.avg_ms, _MIN_MS),
        p10_ms=p10,
        p90_ms=p90,
        std_ms=std or 0.0,
        runs=summary.count,
        samples_ms=[],
        warmup=meta.pop("warmup", summary.warmup_count),
        tool=meta.pop("tool", summary.tool),
        tool_version=meta.pop("tool_version", summary.version),
        flags=flags,
        **meta,
    )


def relative_spread(stats: MeasurementStats) -> float:
    """(p90 - p10) / median: scale-free, robust to a few outliers."""
    return (stats.p90_ms - stats.p10_ms) / stats.median_ms


def measure_until_stable(
    measure: Callable[[], MeasurementStats],
    max_spread: float = DEFAULT_MAX_SPREAD,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> MeasurementStats:
    """Measure; while the spread is far above normal, measure again (bounded). Keep the quietest
    attempt and flag it ``unstable`` when even that one is too noisy."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    best: MeasurementStats | None = None
    for attempt in range(1, max_attempts + 1):
        stats = measure()
        if best is None or relative_spread(stats) < relative_spread(best):
            best = stats
        if relative_spread(best) <= max_spread:
            return best.model_copy(update={"attempts": attempt})
        log.info("spread %.2f > %.2f on attempt %d, re-measuring", relative_spread(stats), max_spread, attempt)
    assert best is not None
    return best.model_copy(update={"attempts": max_attempts, "unstable": True})
