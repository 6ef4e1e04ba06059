"""Shared by the stand-ins: load a model with the host runtime and time runs (seconds per run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def load(path: Path, threads: int) -> Callable[[], object]:
    """A callable running one inference; raises the runtime's own error when the model is bad."""
    from android_harness import host

    session = host._onnx_session if path.suffix == ".onnx" else host._tflite_session
    run, _ = session(path, threads)
    return run


def timed_pass(run: Callable[[], object], min_runs: int, min_secs: float, max_secs: float) -> list[float]:
    """Run until ``min_runs`` and ``min_secs`` are both reached (``max_secs`` caps); seconds per run."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(times) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
