"""Measure models on an Android phone through adb.

Per job: wait for the phone to cool, push the model once (keyed by sha256; the benchmark binary is
pushed once too), pin the tool to the big cores with ``taskset``, run TFLite ``benchmark_model`` for
``.tflite`` or ``onnxruntime_perf_test`` for ``.onnx``, parse its output. Old models are evicted when
the device's free space runs low.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import adbutils

from android_harness.adb_io import DeviceIO, RemoteFile, adb_client, list_serials
from android_harness.artifact_cache import sha256_file
from android_harness.errors import BenchmarkFailed, HarnessError, UnsupportedModel
from android_harness.parsers import BenchmarkSummary, parse_output
from android_harness.runner import RUNTIME_OF_FORMAT, MeasureOptions, model_format
from android_harness.stats import measure_until_stable, summary_stats
from shared.schemas import DeviceInfo, MeasurementStats

log = logging.getLogger(__name__)

WORK_DIR = "/data/local/tmp/rtseg"
TOOL_OF_FORMAT = {"tflite": "benchmark_model", "onnx": "onnxruntime_perf_test"}
CPU_FREQ_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"
THERMAL_GLOB = "/sys/class/thermal/thermal_zone*/temp"
_TFLITE_DELEGATE_FLAGS = {"gpu": "--use_gpu=true", "nnapi": "--use_nnapi=true", "xnnpack": "--use_xnnpack=true"}
_ORT_PROVIDERS = {"cpu": "cpu", "nnapi": "nnapi", "qnn": "qnn", "xnnpack": "xnnpack"}


def parse_getprop(text: str) -> dict[str, str]:
    """``[ro.product.model]: [SM-G991B]`` lines -> dict."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, flags=re.MULTILINE))


def parse_grep_h(text: str) -> dict[str, str]:
    """``path:value`` lines of ``grep -H . FILES`` -> {path: value}."""
    out = {}
    for line in text.splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith("/"):
            out[path] = value.strip()
    return out


def parse_cpu_max_freqs(text: str) -> list[int]:
    """Max frequency (kHz) per CPU index; a CPU with no readable value gets 0."""
    by_cpu = {}
    for path, value in parse_grep_h(text).items():
        m = re.search(r"/cpu(\d+)/", path)
        if m and value.isdigit():
            by_cpu[int(m.group(1))] = int(value)
    return [by_cpu.get(i, 0) for i in range(max(by_cpu) + 1)] if by_cpu else []


def parse_temperatures(text: str) -> dict[str, float]:
    """Thermal zone readings -> degrees C; implausible sensors (disabled, -273, raw ADC) are dropped."""
    temps = {}
    for path, value in parse_grep_h(text).items():
        try:
            raw = float(value)
        except ValueError:
            continue
        celsius = raw / 1000.0 if abs(raw) >= 1000 else raw / 10.0 if abs(raw) > 200 else raw
        if -30.0 < celsius < 150.0:
            temps[path] = celsius
    return temps


def grep_command(pattern: str) -> str:
    """``path:value`` for every file matching a fixed glob (expanded by the device shell, so the
    pattern is one of this module's constants, never user input)."""
    return f"grep -H . {pattern} 2>/dev/null"


def hottest(grep_output: str) -> float | None:
    temps = parse_temperatures(grep_output)
    return max(temps.values()) if temps else None


def big_core_mask(freqs: list[int], threads: int) -> int | None:
    """Cores faster than the slowest cluster (at least ``threads`` of them, fastest first); None
    when nothing is known or every core is alike (no pinning needed)."""
    known = [(f, i) for i, f in enumerate(freqs) if f > 0]
    if not known or len({f for f, _ in known}) == 1:
        return None
    slowest = min(f for f, _ in known)
    ranked = sorted(known, key=lambda fi: (-fi[0], fi[1]))
    chosen = [i for f, i in ranked if f > slowest]
    if len(chosen) < threads:
        chosen = [i for _, i in ranked[:threads]]
    return sum(1 << i for i in chosen)


def parse_df_available_kb(text: str) -> int | None:
    """Available KiB from ``df -k PATH`` (last line, 4th column)."""
    lines = [line.split() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2 or len(lines[-1]) < 4 or not lines[-1][3].isdigit():
        return None
    return int(lines[-1][3])


@dataclass(frozen=True)
class AdbSettings:
    """Knobs of the adb runner. The defaults follow the farm's measurement protocol: the benchmark is
    pinned to the big cores (mask from the cores' max frequencies), and before each job the phone
    cools until its hottest thermal zone is under ``cool_threshold_c`` (waiting at most
    ``cool_max_wait_s``); the temperature is recorded with the result."""

    work_dir: str = WORK_DIR
    call_timeout_s: float = 30.0
    cpu_mask: int | None = None  # override the big-core mask
    cool_threshold_c: float = 45.0
    cool_max_wait_s: float = 120.0
    cool_poll_s: float = 2.0
    reading_fresh_s: float = 5.0  # a temperature read this recently stands in for a new one
    min_free_kb: int = 200_000


class AdbRunner:
    """One phone (serial) behind an adb server."""

    def __init__(
        self,
        serial: str,
        client: adbutils.AdbClient | None = None,
        binaries: dict[str, Path] | None = None,
        settings: AdbSettings | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.serial = serial
        self.settings = settings or AdbSettings()
        self.io = DeviceIO(client or adb_client(), serial, self.settings.call_timeout_s, abort)
        self.binaries = {tool: Path(p) for tool, p in (binaries or {}).items()}
        self._info: DeviceInfo | None = None
        self._present: set[str] = set()  # remote paths known to hold the right bytes
        self._listings: dict[str, dict[str, RemoteFile]] = {}
        self._free_kb_estimate: int | None = None
        self._last_reading: tuple[float, float] | None = None  # (hottest zone C, monotonic time)

    # --- device info ---------------------------------------------------------------------------

    def device_info(self) -> DeviceInfo:
        if self._info is None:
            props = parse_getprop(self.io.check_output(["getprop"]))
            freqs = parse_cpu_max_freqs(self._grep_files(CPU_FREQ_GLOB))
            zones = parse_grep_h(self._grep_files(THERMAL_GLOB))
            model = props.get("ro.product.model", "") or self.serial
            soc = props.get("ro.board.platform") or props.get("ro.hardware") or props.get("ro.soc.model", "unknown")
            self._info = DeviceInfo(
                serial=self.serial, device_class=f"{model}/{soc}", kind="adb", model=model,
                manufacturer=props.get("ro.product.manufacturer", ""), soc=soc,
                android_release=props.get("ro.build.version.release", ""),
                abi=props.get("ro.product.cpu.abi", ""), cpu_max_freq_khz=freqs[:64], thermal_zones=len(zones),
                runtimes=self.runtimes(),
            )
        return self._info

    def runtimes(self) -> list[str]:
        """The runtimes whose benchmark tool this agent was given for the phone."""
        return sorted(RUNTIME_OF_FORMAT[fmt] for fmt, tool in TOOL_OF_FORMAT.items() if tool in self.binaries)

    def _grep_files(self, pattern: str) -> str:
        _, out = self.io.shell(grep_command(pattern))
        return out

    def temperature_c(self) -> float | None:
        return self._remember(hottest(self._grep_files(THERMAL_GLOB)))

    def _remember(self, temp: float | None) -> float | None:
        self._last_reading = None if temp is None else (temp, time.monotonic())
        return temp

    def wait_until_cool(self) -> float | None:
        """Poll the hottest zone until it is under the threshold (bounded); returns the last reading.
        A reading taken at the end of the previous run moments ago counts: an idle phone only cools."""
        fresh = self._last_reading
        if fresh is not None and time.monotonic() - fresh[1] <= self.settings.reading_fresh_s \
                and fresh[0] <= self.settings.cool_threshold_c:
            return fresh[0]
        deadline = time.monotonic() + self.settings.cool_max_wait_s
        while True:
            temp = self.temperature_c()
            if temp is None or temp <= self.settings.cool_threshold_c:
                return temp
            if time.monotonic() >= deadline:
                log.warning("%s still at %.1f C after %.0f s of cool-down; measuring anyway",
                            self.serial, temp, self.settings.cool_max_wait_s)
                return temp
            time.sleep(self.settings.cool_poll_s)

    # --- files on the device -----------------------------------------------------------------

    def ensure_file(self, local: Path, remote: str, mode: int) -> str:
        """Push ``local`` to ``remote`` unless it is already there with the same size."""
        if remote in self._present:
            return remote
        folder, _, name = remote.rpartition("/")
        size = local.stat().st_size
        existing = self._listing(folder).get(name)
        if existing is None or existing.size != size:
            self.make_room(size)
            self.io.push(local, remote, mode)
            self._free_kb_estimate = None if self._free_kb_estimate is None else self._free_kb_estimate - size // 1024
            log.info("pushed %s to %s:%s", local.name, self.serial, remote)
        self._present.add(remote)
        return remote

    def _listing(self, folder: str) -> dict[str, RemoteFile]:
        """What a folder held the first time we looked (one LIST per folder instead of a STAT per file)."""
        if folder not in self._listings:
            self._listings[folder] = {f.name: f for f in self.io.listdir(folder)}
        return self._listings[folder]

    def push_model(self, model: Path) -> str:
        sha = sha256_file(model)
        return self.ensure_file(model, f"{self.settings.work_dir}/models/{sha}{model.suffix.lower()}", 0o644)

    def push_binary(self, tool: str) -> tuple[str, str]:
        """(remote path, sha256) of the tool's binary; pushed once per content."""
        local = self.binaries.get(tool)
        if local is None or not local.is_file():
            raise HarnessError(f"no {tool} binary for {self.serial}: pass --benchmark-binary (the tool built for "
                               f"{self.device_info().abi or 'this ABI'})")
        sha = sha256_file(local)
        return self.ensure_file(local, f"{self.settings.work_dir}/bin/{sha[:16]}/{tool}", 0o755), sha

    def free_kb(self) -> int | None:
        rc, out = self.io.shell(["df", "-k", "/data/local/tmp"])
        return parse_df_available_kb(out) if rc == 0 else None

    def make_room(self, needed_bytes: int) -> None:
        """Delete the oldest pushed models until ``needed_bytes`` plus the reserve fit. Free space is
        read with ``df`` only when our running estimate gets near the reserve."""
        want = self.settings.min_free_kb + math.ceil(needed_bytes / 1024)
        if self._free_kb_estimate is not None and self._free_kb_estimate >= 2 * want:
            return
        free = self._free_kb_estimate = self.free_kb()
        if free is None or free >= want:
            return
        models_dir = f"{self.settings.work_dir}/models"
        victims = sorted((f for f in self.io.listdir(models_dir) if not f.is_dir), key=lambda f: f.mtime)
        for victim in victims:
            self._remove(f"{models_dir}/{victim.name}", victim)
            free += victim.size // 1024
            if free >= want:
                break
        else:
            log.warning("%s: only %d KiB free after eviction (wanted %d)", self.serial, free, want)
        self._free_kb_estimate = free

    def _remove(self, path: str, entry: RemoteFile) -> None:
        self.io.check_output(["rm", "-f", path])
        self._present.discard(path)
        folder, _, name = path.rpartition("/")
        self._listings.get(folder, {}).pop(name, None)
        log.info("evicted %s (%d bytes) from %s", entry.name, entry.size, self.serial)

    # --- measuring ----------------------------------------------------------------------------

    def measure(self, model_path: Path, options: MeasureOptions) -> MeasurementStats:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UnsupportedModel(f"model file {model_path} does not exist")
        tool = TOOL_OF_FORMAT[model_format(model_path)]
        binary, binary_sha = self.push_binary(tool)
        remote_model = self.push_model(model_path)
        mask = self.settings.cpu_mask or big_core_mask(self.device_info().cpu_max_freq_khz, options.threads)

        def once() -> MeasurementStats:
            temp_before = self.wait_until_cool()
            summary, flags, temp_after = self._run_tool(tool, binary, remote_model, options, mask)
            return summary_stats(
                summary, warmup=options.warmup, flags=flags, temp_before_c=temp_before,
                temp_after_c=temp_after, tool_version=summary.version or f"sha256:{binary_sha[:12]}",
            )

        return measure_until_stable(once, options.max_spread, options.max_attempts)

    def _run_tool(self, tool: str, binary: str, model: str, options: MeasureOptions,
                  mask: int | None) -> tuple[BenchmarkSummary, list[str], float | None]:
        """Run the tool (perf_test: warm-up pass, then the timed pass); the temperature right after
        the timed pass is read in the same adb round trip."""
        prefix = ["taskset", f"{mask:x}"] if mask else []
        flags = options.flags() + ([f"taskset={mask:x}"] if mask else [])
        if tool == "benchmark_model":
            argv = prefix + [binary, *tflite_flags(model, options)]
        else:
            runs = options.runs
            if options.warmup > 0:
                # perf_test has no warm-up flag: a first pass of `warmup` runs warms up and sizes the timed pass
                warm_argv = prefix + [binary, *perf_test_flags(model, options, options.warmup)]
                runs = timed_run_count(options, self._run_and_parse(tool, warm_argv, options)[0].avg_ms)
            argv = prefix + [binary, *perf_test_flags(model, options, runs)]
        summary, temp_after = self._run_and_parse(tool, argv, options, read_temperature=True)
        return summary, flags, temp_after

    def _run_and_parse(self, tool: str, argv: list[str], options: MeasureOptions,
                       read_temperature: bool = False) -> tuple[BenchmarkSummary, float | None]:
        epilogue = grep_command(THERMAL_GLOB) if read_temperature else ""
        rc, out, after = self.io.shell_then(argv, epilogue, timeout_s=2 * options.max_seconds + self.settings.call_timeout_s)
        if rc != 0:
            last = out.strip().splitlines()[-1] if out.strip() else "(no output)"
            raise BenchmarkFailed(f"{tool} exited with status {rc} on {self.serial}: {last}", out)
        return parse_output(tool, out), self._remember(hottest(after)) if read_temperature else None


def tflite_flags(model: str, options: MeasureOptions) -> list[str]:
    flags = [f"--graph={model}", f"--num_threads={options.threads}", f"--warmup_runs={options.warmup}",
             f"--num_runs={options.runs}", f"--min_secs={options.min_seconds:g}", f"--max_secs={options.max_seconds:g}"]
    if options.delegate != "cpu":
        flags.append(_TFLITE_DELEGATE_FLAGS[options.delegate])
    return flags


def perf_test_flags(model: str, options: MeasureOptions, runs: int) -> list[str]:
    if options.delegate not in _ORT_PROVIDERS:
        raise UnsupportedModel(f"onnxruntime_perf_test has no {options.delegate!r} execution provider")
    return ["-m", "times", "-r", str(runs), "-x", str(options.threads), "-y", "1",
            "-e", _ORT_PROVIDERS[options.delegate], "-I", "-s", model]


def timed_run_count(options: MeasureOptions, avg_ms: float) -> int:
    """At least ``runs`` and enough runs to last ``min_seconds``, never past ``max_seconds``."""
    if avg_ms <= 0:
        return options.runs
    for_min_time = math.ceil(options.min_seconds * 1000.0 / avg_ms)
    cap = max(options.runs, math.floor(options.max_seconds * 1000.0 / avg_ms))
    return min(max(options.runs, for_min_time), cap)


def discover(client: adbutils.AdbClient | None = None) -> list[str]:
    """Serials of the online phones the adb server knows."""
    return list_serials(client or adb_client())
