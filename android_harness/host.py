"""The host CPU as a first-class device: onnxruntime (and LiteRT when installed) on this machine.

Fixed thread count, warm-ups, then timed runs until both ``runs`` and ``min_seconds`` are reached
(capped by ``max_seconds``); every per-run sample is kept.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from android_harness.errors import BenchmarkFailed, MeasurementAborted, UnsupportedModel
from android_harness.runner import MeasureOptions, model_format
from android_harness.stats import measure_until_stable, summarize_samples
from shared.schemas import (
    KERNEL_HELPER_PREFIX,
    NODE_CLOCK,
    REORDERS_EXCLUDED_FLAG,
    RUN_GAP_FLAG,
    RUN_NODES_FLAG,
    DeviceInfo,
    MeasurementStats,
)

log = logging.getLogger(__name__)

HOST_SERIAL = "host"
MAX_SAMPLES = 100_000  # MeasurementStats.samples_ms bound
_NOISE_WORDS = re.compile(r"\((?:R|TM|r|tm)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
               "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name from /proc/cpuinfo (falls back to platform info)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown-cpu"


def slugify_cpu(name: str) -> str:
    """``Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz`` -> ``intel-xeon-platinum-8375c``."""
    cleaned = _NOISE_WORDS.sub(" ", name).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", cleaned).strip("-")
    return slug or "unknown-cpu"


@functools.cache
def host_device_class() -> str:
    return f"host/{slugify_cpu(cpu_model_name())}"


def _cpu_max_freqs() -> list[int]:
    freqs = []
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq")):
        try:
            freqs.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):
            continue
    return freqs[:64]


def host_temperature_c() -> float | None:
    """Hottest readable thermal zone of the host, or None (VMs usually have none)."""
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        try:
            temps.append(int(Path(path).read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    plausible = [t for t in temps if 0 < t < 150]
    return max(plausible) if plausible else None


def host_device_info() -> DeviceInfo:
    return DeviceInfo(
        serial=HOST_SERIAL,
        device_class=host_device_class(),
        kind="host",
        model=cpu_model_name(),
        manufacturer=platform.system(),
        soc=platform.machine(),
        abi=platform.machine(),
        cpu_max_freq_khz=_cpu_max_freqs(),
        thermal_zones=len(glob.glob("/sys/class/thermal/thermal_zone*")),
        runtimes=["onnxruntime", "tflite"] if litert_available() else ["onnxruntime"],
    )


def _random_input(shape: list, dtype: type, rng: np.random.Generator) -> np.ndarray:
    dims = [int(d) if isinstance(d, int | np.integer) and d > 0 else 1 for d in shape]  # symbolic dims -> 1
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(dims).astype(dtype)
    return np.zeros(dims, dtype=dtype)


def _ort_session(path: Path, threads: int, profile_prefix: str | None = None):  # noqa: ANN202 - ort types
    """An onnxruntime session of ``path`` (1 inter-op thread, sequential) and random feeds for it;
    ``profile_prefix`` turns onnxruntime's per-node profiling on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        raise UnsupportedModel(f"onnxruntime cannot load {path.name}: {exc}", str(exc)) from exc
    rng = np.random.default_rng(0)
    feeds = {i.name: _random_input(i.shape, _ORT_DTYPES.get(i.type, np.float32), rng) for i in sess.get_inputs()}
    return sess, feeds


def _onnx_session(path: Path, threads: int) -> tuple[Callable[[], object], str]:
    import onnxruntime as ort

    sess, feeds = _ort_session(path, threads)
    return functools.partial(sess.run, None, feeds), f"onnxruntime {ort.__version__}"


REORDER_OPS = ("ReorderInput", "ReorderOutput")  # onnxruntime's NCHWc layout conversions
PROFILED_MAX_SAMPLES = 5_000  # a profiled measurement keeps its profile file small
PLAIN_RUNS = 20  # unprofiled calls of a one-kernel model that time its call and dispatch


def _is_helper(node: str, op: str) -> bool:
    return op in REORDER_OPS or node.startswith(KERNEL_HELPER_PREFIX)


@dataclass(frozen=True)
class KernelProfile:
    """What onnxruntime's profile says of a one-kernel model, per run after the warm-ups."""

    samples_ms: list[float]  # the kernel's own node time, each run
    helpers_ms: float  # median time per run of the layout conversions and aux_ helpers left out
    nodes: int  # nodes a run executes (the kernel, its conversions and helpers)


DESCHEDULED_MIN_MS = 0.05  # wall minus thread CPU time below this is clock granularity, not a preemption
DESCHEDULED_MIN_SHARE = 0.05  # ... and below this share of the run, noise
MENDED_FLOOR = 0.05  # a mended sample keeps at least this share of its node time


def kernel_profile(profile: list[dict], skip_runs: int = 0,
                   run_clock: list[tuple[float, float]] | None = None) -> KernelProfile:
    """From an onnxruntime profile: per run (after the first ``skip_runs``), the time of the nodes
    that are the kernel, i.e. every node but the NCHWc layout conversions and ``aux_`` helpers that
    started inside that run's window (a model of nothing but conversions is a reorder kernel: its
    conversions are the kernel), with the helpers' time and the run's node count.

    ``run_clock`` (per run after the warm-ups: wall and the measuring thread's CPU time around the
    call, ms) mends the runs the scheduler gave the core away in (wall less CPU above clock
    granularity and 5 % of the run; on a busy shared host a 6.5 ms conv was 10-20 ms wall in every
    run): such a run's kernel is its CPU time less the undisturbed (p10) time outside the runtime,
    in helpers and outside nodes, never more than its node time. Subtracting the time away from the
    node instead went wrong whenever it fell outside the kernel, and p10 picked those runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in profile
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    nodes = [(e["ts"], e["dur"], _is_helper(e.get("name", "").removesuffix("_kernel_time"),
                                            e.get("args", {}).get("op_name", "")))
             for e in profile if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    if not runs:
        return KernelProfile([], 0.0, 0)
    only_helpers = not any(not helper for _, _, helper in nodes)
    samples, helpers, gaps, counts = [], [], [], []  # gaps: outside any node (only to mend runs)
    for start, end in runs:
        inside = [(dur, helper) for ts, dur, helper in nodes if start <= ts <= end]
        samples.append(sum(dur for dur, helper in inside if only_helpers or not helper) / 1000)
        helpers.append(0.0 if only_helpers else sum(dur for dur, helper in inside if helper) / 1000)
        gaps.append(max(end - start - sum(dur for dur, _ in inside), 0) / 1000)
        counts.append(len(inside))
    if run_clock is not None and len(run_clock) == len(runs):
        outside = [wall - (end - start) / 1000 for (wall, _), (start, end) in zip(run_clock, runs, strict=True)]
        undisturbed = float(np.percentile(outside, 10) + np.percentile(helpers, 10) + np.percentile(gaps, 10))
        for i, (wall, cpu) in enumerate(run_clock):
            if wall - cpu > max(DESCHEDULED_MIN_MS, DESCHEDULED_MIN_SHARE * wall):
                samples[i] = min(samples[i], max(cpu - undisturbed, MENDED_FLOOR * samples[i]))
    return KernelProfile(samples, float(np.median(helpers)), int(np.median(counts)))


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _tflite_session(path: Path, threads: int) -> tuple[Callable[[], object], str]:
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise UnsupportedModel("measuring .tflite on the host needs ai-edge-litert (the 'tflite' extra)") from exc
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UnsupportedModel(f"LiteRT cannot load {path.name}: {exc}", str(exc)) from exc
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], _random_input(list(detail["shape"]), detail["dtype"], rng))
    version = getattr(ai_edge_litert, "__version__", "")
    return interp.invoke, f"litert {version}".strip()


def sample_clock(options: MeasureOptions) -> tuple[str, Callable[[], int]]:
    """The clock per-run samples are read from: ``wall`` (the default, what latency means) or
    ``thread-cpu`` (the calling thread's CPU time; only meaningful with one thread). Checked here:
    in a VM the thread CPU clock is accounted coarsely and came out bimodal (0.013 vs 0.022 ms for
    one 0.02 ms block), so it is an opt-in for long single-thread runs on a busy shared host."""
    return options.clock, (time.thread_time_ns if options.clock == "thread-cpu" else time.perf_counter_ns)


def time_runs(run: Callable[[], object], options: MeasureOptions, abort: threading.Event | None = None,
              max_samples: int = MAX_SAMPLES) -> list[float]:
    """Warm up, then time runs (ms) until ``runs`` and ``min_seconds`` (wall) are both reached."""
    abort = abort or threading.Event()
    for _ in range(options.warmup):
        run()
    samples: list[float] = []
    _, now_ns = sample_clock(options)
    start = time.perf_counter()
    while len(samples) < max_samples:
        t0 = now_ns()
        run()
        samples.append((now_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        if len(samples) >= options.runs and elapsed >= options.min_seconds:
            break
        if abort.is_set():
            raise MeasurementAborted(f"measurement aborted after {len(samples)} runs")
        if elapsed >= options.max_seconds:
            log.warning("stopped after %d runs: max_seconds=%.1f reached", len(samples), options.max_seconds)
            break
    return samples


class HostRunner:
    """Measures models on this machine's CPU. Setting ``abort`` stops a measurement in progress."""

    def __init__(self, abort: threading.Event | None = None) -> None:
        self.abort = abort or threading.Event()

    def device_info(self) -> DeviceInfo:
        return host_device_info()

    def measure(self, model_path: Path, options: MeasureOptions) -> MeasurementStats:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UnsupportedModel(f"model file {model_path} does not exist")
        if options.delegate != "cpu":
            raise UnsupportedModel(f"the host runs only the cpu delegate, not {options.delegate!r}")
        fmt = model_format(model_path)
        if options.exclude_layout_reorders and fmt == "onnx":
            return measure_until_stable(lambda: self._measure_without_helpers(model_path, options),
                                        options.max_spread, options.max_attempts)
        run, tool = (_onnx_session if fmt == "onnx" else _tflite_session)(model_path, options.threads)
        name, _, version = tool.partition(" ")

        def once() -> MeasurementStats:
            temp_before = host_temperature_c()
            samples = self._timed(run, options, name, model_path)
            return summarize_samples(samples, warmup=options.warmup, tool=name, tool_version=version,
                                     flags=options.flags() + [f"clock={sample_clock(options)[0]}"],
                                     temp_before_c=temp_before, temp_after_c=host_temperature_c())

        return measure_until_stable(once, options.max_spread, options.max_attempts)

    def _timed(self, run: Callable[[], object], options: MeasureOptions, name: str, model_path: Path,
               max_samples: int = MAX_SAMPLES) -> list[float]:
        try:
            return time_runs(run, options, self.abort, max_samples)
        except MeasurementAborted:
            raise
        except Exception as exc:  # the runtime's own error types: keep the message
            raise BenchmarkFailed(f"{name} failed while running {model_path.name}: {exc}", str(exc)) from exc

    def _plain_run_ms(self, model_path: Path, options: MeasureOptions) -> float:
        """p10 of a call of the model without the profiler: thread CPU time with one thread (immune
        to the scheduler), wall time otherwise."""
        sess, feeds = _ort_session(model_path, options.threads)
        plain = replace(options, runs=PLAIN_RUNS, min_seconds=0.0,
                        clock="thread-cpu" if options.threads == 1 else "wall")
        samples = self._timed(functools.partial(sess.run, None, feeds), plain, "onnxruntime", model_path)
        return float(np.percentile(samples, 10))

    def _measure_without_helpers(self, model_path: Path, options: MeasureOptions) -> MeasurementStats:
        """A one-kernel model as the kernel runs inside a whole model: every run profiled by
        onnxruntime, each sample the kernel's own node time without the layout conversions and
        ``aux_`` helpers around it and, with one thread, without the time the thread was
        descheduled (``kernel_profile``; flag ``clock=ort-node``). Flags also carry what was left
        out and, from a few runs without the profiler (it costs about 10 µs a node, more than a
        node's dispatch), the call's time outside any node with the run's node count."""
        import onnxruntime as ort

        temp_before = host_temperature_c()
        clock: list[tuple[float, float]] = []  # per run: wall and this thread's CPU time (ms)
        with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
            sess, feeds = _ort_session(model_path, options.threads, profile_prefix=os.path.join(tmp, "profile"))

            def run() -> None:
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                sess.run(None, feeds)
                clock.append(((time.perf_counter_ns() - t0) / 1e6, (time.thread_time_ns() - c0) / 1e6))

            self._timed(run, options, "onnxruntime", model_path, PROFILED_MAX_SAMPLES)
            events = json.loads(Path(sess.end_profiling()).read_text())
        # with one intra-op thread onnxruntime computes on the calling thread, so its CPU time is the run's
        prof = kernel_profile(events, skip_runs=options.warmup,
                              run_clock=clock[options.warmup:] if options.threads == 1 else None)
        if not prof.samples_ms:
            raise BenchmarkFailed(f"onnxruntime's profile of {model_path.name} holds no runs")
        kernel_ms = float(np.percentile(prof.samples_ms, 10))
        gap_ms = max(self._plain_run_ms(model_path, options) - kernel_ms - prof.helpers_ms, 0.0)
        flags = [f"clock={NODE_CLOCK}", f"{REORDERS_EXCLUDED_FLAG}{prof.helpers_ms:.5f}",
                 f"{RUN_GAP_FLAG}{gap_ms:.5f}", f"{RUN_NODES_FLAG}{prof.nodes}"]
        return summarize_samples(prof.samples_ms, warmup=options.warmup, tool="onnxruntime", tool_version=ort.__version__,
                                 flags=options.flags() + flags,
                                 temp_before_c=temp_before, temp_after_c=host_temperature_c())
