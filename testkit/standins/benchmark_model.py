#!/usr/bin/env python3
"""Stand-in for TFLite ``benchmark_model``: same flags, same ``INFO:`` output (times in us)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from testkit.standins._timing import load, percentile, timed_pass  # noqa: E402

DEFAULTS = {"graph": "", "num_threads": "-1", "warmup_runs": "1", "num_runs": "50", "min_secs": "1",
            "max_secs": "150", "warmup_min_secs": "0.5", "use_xnnpack": "false", "use_gpu": "false",
            "use_nnapi": "false"}


def parse_flags(argv: list[str]) -> dict[str, str]:
    flags = dict(DEFAULTS)
    for arg in argv:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in flags:
            print(f"WARNING: Unconsumed cmdline flags: {arg}")
            continue
        flags[key] = value
    return flags


def stat_line(times_s: list[float]) -> str:
    us = [t * 1e6 for t in times_s]
    std = statistics.pstdev(us) if len(us) > 1 else 0.0
    return (f"count={len(us)} first={us[0]:.6g} curr={us[-1]:.6g} min={min(us):.6g} max={max(us):.6g} "
            f"avg={statistics.fmean(us):.6g} std={std:.0f} p5={percentile(us, 5):.6g} "
            f"median={percentile(us, 50):.6g} p95={percentile(us, 95):.6g}")


def main(argv: list[str]) -> int:
    f = parse_flags(argv)
    print("INFO: STARTING!")
    print(f"INFO: Graph: [{f['graph']}]")
    threads = int(f["num_threads"])
    print(f"INFO: #threads used for CPU inference: [{threads}]")
    if f["use_gpu"] == "true" or f["use_nnapi"] == "true":
        print("ERROR: this host stand-in has no GPU/NNAPI delegate")
        return 1
    t0 = time.perf_counter()
    if not f["graph"].endswith(".tflite"):
        print(f"ERROR: The model is not a valid Flatbuffer buffer\nERROR: Failed to mmap model {f['graph']}")
        print("ERROR: Benchmarking failed.")
        return 1
    try:
        run = load(Path(f["graph"]), max(threads, 1))
    except Exception as exc:  # the real tool prints the loader's error and gives up
        print(f"ERROR: Failed to load model {f['graph']}: {exc}")
        print("ERROR: Benchmarking failed.")
        return 1
    init_us = (time.perf_counter() - t0) * 1e6
    print(f"INFO: Loaded model {f['graph']}")
    print(f"INFO: Initialized session in {init_us / 1000:.3f}ms.")
    warm_runs, warm_secs = int(f["warmup_runs"]), float(f["warmup_min_secs"])
    print(f"INFO: Running benchmark for at least {warm_runs} iterations and at least {warm_secs} seconds "
          f"but terminate if exceeding {f['max_secs']} seconds.")
    warm = timed_pass(run, max(warm_runs, 1), warm_secs, float(f["max_secs"]))
    print("INFO: " + stat_line(warm) + "\n")
    runs, secs = int(f["num_runs"]), float(f["min_secs"])
    print(f"INFO: Running benchmark for at least {runs} iterations and at least {secs} seconds "
          f"but terminate if exceeding {f['max_secs']} seconds.")
    timed = timed_pass(run, runs, secs, float(f["max_secs"]))
    print("INFO: " + stat_line(timed) + "\n")
    print(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: {warm[0] * 1e6:.0f}, "
          f"Warmup (avg): {statistics.fmean(warm) * 1e6:.6g}, Inference (avg): {statistics.fmean(timed) * 1e6:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
