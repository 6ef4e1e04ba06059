"""Benchmark: the measurement harness.

1. Host: configs measured per minute end to end (export excluded: every config is exported to ONNX
   first) with the default host protocol (1 thread, 10 warm-ups, >= 50 runs and >= 0.2 s), and the
   test-retest spread of the same configs measured twice in shuffled order (the noise floor):
   median over configs of |m1 - m2| / mean(m1, m2). Target <= 2 %.
2. adb path on the loopback emulator (real adb server and client): harness overhead per job beyond
   the benchmark tool's own time (job wall time minus the wall time of the tool processes the
   device ran: pushes, shell round trips, thermal reads, parsing). Target <= 150 ms.

Prints the figures and writes ``runs/bench/harness.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testkit/ (not installed)

from android_harness.adb import AdbRunner, AdbSettings  # noqa: E402
from android_harness.host import HostRunner, host_device_class  # noqa: E402
from android_harness.runner import MeasureOptions  # noqa: E402
from shared.export import export_block_onnx  # noqa: E402
from shared.space import default_space, sample_stratified  # noqa: E402
from testkit.adb_emulator import AdbServer, DeviceEmulator  # noqa: E402
from testkit.standins import standin_path  # noqa: E402

HOST_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2)
CPU_CLOCK_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2, clock="thread-cpu")
PHONE_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2)


def export_configs(n: int, seed: int, folder: Path) -> list[Path]:
    configs = sample_stratified(default_space(((64, 128),)), n, seed=seed)
    paths = []
    for i, cfg in enumerate(configs):
        path = folder / f"{i:03d}-{cfg.kind}.onnx"
        path.write_bytes(export_block_onnx(cfg))
        paths.append(path)
    return paths


def measure_pass(paths: list[Path], rng: random.Random, options: MeasureOptions) -> tuple[dict[Path, tuple], float]:
    """{path: (median_ms, p10_ms)} in shuffled order, and the pass's seconds."""
    order = list(paths)
    rng.shuffle(order)  # randomized job order, as in the protocol
    runner = HostRunner()
    started = time.perf_counter()
    results = {}
    for p in order:
        stats = runner.measure(p, options)
        results[p] = (stats.median_ms, stats.p10_ms)
    return results, time.perf_counter() - started


def _rel(a: float, b: float) -> float:
    return abs(a - b) / ((a + b) / 2)


def retest(paths: list[Path], rng: random.Random, options: MeasureOptions) -> tuple[list[float], list[float], dict, float]:
    """|m1 - m2| / mean(m1, m2) per config over two shuffled passes, for the median and for p10;
    the first pass's medians; seconds spent measuring."""
    first, t1 = measure_pass(paths, rng, options)
    second, t2 = measure_pass(paths, rng, options)
    medians = [_rel(first[p][0], second[p][0]) for p in paths]
    p10s = [_rel(first[p][1], second[p][1]) for p in paths]
    return medians, p10s, {p: m for p, (m, _) in first.items()}, t1 + t2


def bench_host(n: int, seed: int, folder: Path, cpu_configs: int) -> dict:
    paths = export_configs(n, seed, folder)
    rng = random.Random(seed)
    load_before = os.getloadavg()[0]
    deltas, p10_deltas, first, seconds = retest(paths, rng, HOST_OPTIONS)
    cpu_deltas = retest(paths[:cpu_configs], rng, CPU_CLOCK_OPTIONS)[0] if cpu_configs else [0.0]
    return {
        "device_class": host_device_class(),
        "configs": n,
        "clock": "wall",
        "configs_per_minute": round(2 * n / seconds * 60, 1),
        "retest_spread_median": round(statistics.median(deltas), 4),
        "retest_spread_p90": round(sorted(deltas)[int(0.9 * (len(deltas) - 1))], 4),
        "retest_spread_of_p10_ms": round(statistics.median(p10_deltas), 4),
        "cpu_clock_configs": cpu_configs,
        "retest_spread_median_cpu_clock": round(statistics.median(cpu_deltas), 4),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
        "median_ms_range": [round(min(first.values()), 4), round(max(first.values()), 4)],
        "target_spread": 0.02,
    }


def bench_adb(jobs: int, folder: Path) -> dict:
    paths = export_configs(jobs, seed=1, folder=folder)
    with DeviceEmulator() as emu, AdbServer() as server:
        serial = server.connect(emu.address)
        runner = AdbRunner(serial, server.client(), {"onnxruntime_perf_test": standin_path("onnxruntime_perf_test")},
                           AdbSettings(cool_threshold_c=45.0))
        runner.device_info()
        overheads, walls = [], []
        for path in paths:
            before = len(emu.exec_log)
            started = time.perf_counter()
            runner.measure(path, PHONE_OPTIONS)
            wall = time.perf_counter() - started
            tool = sum(seconds for _, seconds in emu.exec_log[before:])
            overheads.append((wall - tool) * 1000)
            walls.append(wall)
        server.disconnect(emu.address)
    steady = overheads[1:]  # the first job also pushes the benchmark binary
    return {
        "jobs": jobs,
        "overhead_ms_median": round(statistics.median(steady), 1),
        "overhead_ms_mean": round(statistics.fmean(steady), 1),
        "overhead_ms_max": round(max(steady), 1),
        "overhead_ms_first_job": round(overheads[0], 1),
        "job_wall_s_median": round(statistics.median(walls), 3),
        "target_overhead_ms": 150,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--adb-jobs", type=int, default=12)
    parser.add_argument("--cpu-configs", type=int, default=0,
                        help="configs also re-measured with the thread-CPU clock (comparison)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/harness.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "host").mkdir()
        (Path(tmp) / "adb").mkdir()
        host = bench_host(args.configs, args.seed, Path(tmp) / "host", args.cpu_configs)
        print(f"host: {host['configs_per_minute']} configs/min, test-retest spread "
              f"{100 * host['retest_spread_median']:.2f} % (median over {args.configs} configs; target <= 2 %; "
              f"p90 {100 * host['retest_spread_p90']:.1f} %), of p10 {100 * host['retest_spread_of_p10_ms']:.2f} %; "
              f"load average before/after {host['load_average_1m']} on {os.cpu_count()} cores")
        if args.cpu_configs:
            print(f"host, thread-CPU clock: spread {100 * host['retest_spread_median_cpu_clock']:.2f} % "
                  f"over {args.cpu_configs} configs")
        adb = bench_adb(args.adb_jobs, Path(tmp) / "adb")
        print(f"adb (emulator): harness overhead {adb['overhead_ms_median']} ms/job median, "
              f"{adb['overhead_ms_mean']} mean (target <= 150 ms); first job {adb['overhead_ms_first_job']} ms")
    result = {"host": host, "adb_emulator": adb, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
