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
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from android_harness.adb import AdbRunner, AdbSettings  # noqa: E402
from android_harness.emulator import AdbServer, DeviceEmulator  # noqa: E402
from android_harness.host import HostRunner, host_device_class  # noqa: E402
from android_harness.runner import MeasureOptions  # noqa: E402
from android_harness.standins import standin_path  # noqa: E402
from shared.export import export_block_onnx  # noqa: E402
from shared.space import default_space, sample_stratified  # noqa: E402

HOST_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2)
WALL_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2, clock="wall")
PHONE_OPTIONS = MeasureOptions(threads=1, warmup=10, runs=50, min_seconds=0.2)


def export_configs(n: int, seed: int, folder: Path) -> list[Path]:
    configs = sample_stratified(default_space(((64, 128),)), n, seed=seed)
    paths = []
    for i, cfg in enumerate(configs):
        path = folder / f"{i:03d}-{cfg.kind}.onnx"
        path.write_bytes(export_block_onnx(cfg))
        paths.append(path)
    return paths


def measure_pass(paths: list[Path], rng: random.Random, options: MeasureOptions) -> tuple[dict[Path, float], float]:
    order = list(paths)
    rng.shuffle(order)  # randomized job order, as in the protocol
    runner = HostRunner()
    started = time.perf_counter()
    medians = {p: runner.measure(p, options).median_ms for p in order}
    return medians, time.perf_counter() - started


def retest(paths: list[Path], rng: random.Random, options: MeasureOptions) -> tuple[list[float], dict, float]:
    """|m1 - m2| / mean(m1, m2) per config over two shuffled passes; first pass medians; seconds."""
    first, t1 = measure_pass(paths, rng, options)
    second, t2 = measure_pass(paths, rng, options)
    return [abs(first[p] - second[p]) / ((first[p] + second[p]) / 2) for p in paths], first, t1 + t2


def bench_host(n: int, seed: int, folder: Path, wall_configs: int) -> dict:
    paths = export_configs(n, seed, folder)
    rng = random.Random(seed)
    deltas, first, seconds = retest(paths, rng, HOST_OPTIONS)
    wall_deltas, _, _ = retest(paths[:wall_configs], rng, WALL_OPTIONS) if wall_configs else ([0.0], {}, 0)
    return {
        "device_class": host_device_class(),
        "configs": n,
        "clock": "thread-cpu (1 thread, default)",
        "configs_per_minute": round(2 * n / seconds * 60, 1),
        "retest_spread_median": round(statistics.median(deltas), 4),
        "retest_spread_p90": round(sorted(deltas)[int(0.9 * (len(deltas) - 1))], 4),
        "wall_clock_configs": wall_configs,
        "retest_spread_median_wall_clock": round(statistics.median(wall_deltas), 4),
        "load_average_1m": round(os.getloadavg()[0], 2),
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
    parser.add_argument("--wall-configs", type=int, default=20, help="configs also re-measured with the wall clock")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/harness.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "host").mkdir()
        (Path(tmp) / "adb").mkdir()
        host = bench_host(args.configs, args.seed, Path(tmp) / "host", args.wall_configs)
        print(f"host: {host['configs_per_minute']} configs/min, test-retest spread "
              f"{100 * host['retest_spread_median']:.2f} % (median over {args.configs} configs; target <= 2 %); "
              f"wall clock {100 * host['retest_spread_median_wall_clock']:.2f} % over {args.wall_configs}; "
              f"load average {host['load_average_1m']}")
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
