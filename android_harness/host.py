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
from pathlib import Path

import numpy as np

from android_harness.errors import BenchmarkFailed, MeasurementAborted, UnsupportedModel
from android_harness.runner import MeasureOptions, model_format
from android_harness.stats import measure_until_stable, summarize_samples
from shared.schemas import REORDERS_EXCLUDED_FLAG, DeviceInfo, MeasurementStats

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
PROFILED_RUNS = 20
REORDER_FLOOR = 0.05  # a sample keeps at least this share of itself (noise can over-subtract)


def layout_reorder_ms(profile: list[dict], skip_runs: int = 1) -> float:
    """Per run, the time (ms) an onnxruntime profile spent in NCHWc layout conversions: the median
    over runs (after the first ``skip_runs``, warm-ups) of the conversion nodes that started inside
    each run's window. 0 when the model is nothing but conversions (then they are the kernel) or
    has none."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in profile
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    nodes = [(e["ts"], e["dur"], e.get("args", {}).get("op_name", "")) for e in profile
             if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    if not runs or not {op for _, _, op in nodes} - set(REORDER_OPS):
        return 0.0
    per_run = [sum(dur for ts, dur, op in nodes if op in REORDER_OPS and start <= ts <= end) / 1000
               for start, end in runs]
    return float(np.median(per_run))


def profile_layout_reorders(path: Path, threads: int, runs: int = PROFILED_RUNS) -> float:
    """Time per run (ms) a model spends in layout conversions, from ``runs`` profiled runs after
    one warm-up."""
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        sess, feeds = _ort_session(path, threads, profile_prefix=os.path.join(tmp, "profile"))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return layout_reorder_ms(events, skip_runs=1)


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


def time_runs(run: Callable[[], object], options: MeasureOptions, abort: threading.Event | None = None) -> list[float]:
    """Warm up, then time runs (ms) until ``runs`` and ``min_seconds`` (wall) are both reached."""
    abort = abort or threading.Event()
    for _ in range(options.warmup):
        run()
    samples: list[float] = []
    _, now_ns = sample_clock(options)
    start = time.perf_counter()
    while len(samples) < MAX_SAMPLES:
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
        run, tool = (_onnx_session if fmt == "onnx" else _tflite_session)(model_path, options.threads)
        name, _, version = tool.partition(" ")
        reorder_ms, extra_flags = 0.0, []
        if options.exclude_layout_reorders and fmt == "onnx":
            reorder_ms = profile_layout_reorders(model_path, options.threads)
            extra_flags = [f"{REORDERS_EXCLUDED_FLAG}{reorder_ms:.5f}"]

        def once() -> MeasurementStats:
            temp_before = host_temperature_c()
            try:
                samples = time_runs(run, options, self.abort)
            except MeasurementAborted:
                raise
            except Exception as exc:  # the runtime's own error types: keep the message
                raise BenchmarkFailed(f"{name} failed while running {model_path.name}: {exc}", str(exc)) from exc
            if reorder_ms > 0:  # what the kernel costs inside a whole model, where no conversion surrounds it
                samples = [max(s - reorder_ms, s * REORDER_FLOOR) for s in samples]
            return summarize_samples(samples, warmup=options.warmup, tool=name, tool_version=version,
                                     flags=options.flags() + [f"clock={sample_clock(options)[0]}"] + extra_flags,
                                     temp_before_c=temp_before,
                                     temp_after_c=host_temperature_c())

        return measure_until_stable(once, options.max_spread, options.max_attempts)
