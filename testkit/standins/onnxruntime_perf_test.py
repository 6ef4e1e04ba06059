#!/usr/bin/env python3
"""Stand-in for ``onnxruntime_perf_test``: same flags, same output (average in ms, percentiles in s)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from testkit.standins._timing import load, percentile, timed_pass  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="onnxruntime_perf_test", add_help=False)
    p.add_argument("-m", dest="mode", default="duration", choices=["duration", "times"])
    p.add_argument("-r", dest="repeat", type=int, default=1000)
    p.add_argument("-t", dest="seconds", type=float, default=600.0)
    p.add_argument("-x", dest="intra", type=int, default=0)
    p.add_argument("-y", dest="inter", type=int, default=0)
    p.add_argument("-e", dest="provider", default="cpu")
    p.add_argument("-I", dest="generate_inputs", action="store_true")
    p.add_argument("-s", dest="show_stats", action="store_true")
    p.add_argument("model")
    p.add_argument("result_file", nargs="?")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    if a.provider != "cpu":
        print(f"Error: onnxruntime_perf_test: {a.provider} execution provider is not supported in this build")
        return 1
    if a.intra:
        print(f"Setting intra_op_num_threads to {a.intra}")
    t0 = time.perf_counter()
    try:
        run = load(Path(a.model), max(a.intra, 1))
    except Exception as exc:  # the real tool prints the ORT error and exits non-zero
        print(f"Error: onnxruntime_perf_test: {exc}")
        return 1
    print(f"Session creation time cost: {time.perf_counter() - t0:.6g} s")
    t1 = time.perf_counter()
    run()
    print(f"First inference time cost: {round((time.perf_counter() - t1) * 1000)} ms")
    if a.mode == "times":
        times = timed_pass(run, a.repeat, 0.0, float("inf"))
    else:
        times = timed_pass(run, 1, a.seconds, a.seconds)
    total = sum(times)
    print(f"Total inference time cost: {total:.6g} s")
    print(f"Total inference requests: {len(times)}")
    print(f"Average inference time cost: {statistics.fmean(times) * 1000:.6g} ms")
    print(f"Total inference run time: {total:.6g} s")
    print(f"Number of inferences per second: {len(times) / total:.6g}")
    if a.show_stats:
        print(f"Min Latency: {min(times):.6g} s")
        print(f"Max Latency: {max(times):.6g} s")
        for q, label in ((50, "P50"), (75, "P75"), (90, "P90"), (95, "P95"), (99, "P99"), (99.9, "P999")):
            print(f"{label} Latency: {percentile(times, q):.6g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
