"""Pure parsers for the on-device benchmark tools' stdout (TFLite ``benchmark_model`` and
``onnxruntime_perf_test``). No I/O here: the runners capture output, these turn it into numbers.

Formats handled (each one seen in real output of the tools): lines with or without an ``INFO:`` prefix; ``count=`` lines with
``first/curr/min/max/avg/std`` in microseconds and, in newer builds, ``p5=/median=/p95=``; numbers in
scientific notation (``1.24027e+06``); perf_test averages in ms and percentiles in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from android_harness.errors import BenchmarkFailed

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_KV = re.compile(rf"\b([A-Za-z][A-Za-z0-9_]*)=({_NUM})")
_INFO_PREFIX = re.compile(r"^\s*(?:INFO|WARNING|ERROR|VERBOSE)\s*:\s?")
_DELEGATE_FALLBACK = "will not be executed by the delegate"
_TFLITE_ERRORS = ("Failed to", "Benchmarking failed", "ERROR:", "Error:")


@dataclass(frozen=True)
class BenchmarkSummary:
    """What a benchmark tool reported about one timed pass. Times in milliseconds."""

    tool: str
    count: int
    avg_ms: float
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    median_ms: float | None = None
    percentiles_ms: dict[int, float] = field(default_factory=dict)  # e.g. {5: .., 50: .., 90: ..}
    warmup_count: int = 0
    warmup_avg_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    version: str = ""
    delegate_fallback: bool = False


def _strip_prefix(line: str) -> str:
    return _INFO_PREFIX.sub("", line, count=1).strip()


def _fields(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in _KV.findall(line)}


def _find_version(text: str) -> str:
    m = re.search(r"(?:version|Version)[:\s]+\[?v?([0-9][\w.\-+]*)", text)
    return m.group(1) if m else ""


def _us(values: dict[str, float], key: str) -> float | None:
    return values[key] / 1000.0 if key in values else None


def parse_benchmark_model(output: str) -> BenchmarkSummary:
    """Parse TFLite ``benchmark_model`` output; the last ``count=`` line is the timed pass."""
    lines = [_strip_prefix(line) for line in output.splitlines()]
    passes = [_fields(line) for line in lines if line.startswith("count=")]
    passes = [p for p in passes if "count" in p and "avg" in p]
    if not passes or passes[-1]["count"] < 1:
        raise BenchmarkFailed(_tflite_failure_reason(output.splitlines()), output)
    timed = passes[-1]
    warm = passes[0] if len(passes) > 1 else {}
    timings = _inference_timings(lines)
    percentiles = {p: v for p, key in ((5, "p5"), (50, "median"), (95, "p95")) if (v := _us(timed, key)) is not None}
    return BenchmarkSummary(
        tool="benchmark_model",
        count=int(timed["count"]),
        avg_ms=timed["avg"] / 1000.0,
        std_ms=_us(timed, "std"),
        min_ms=_us(timed, "min"),
        max_ms=_us(timed, "max"),
        median_ms=_us(timed, "median"),
        percentiles_ms=percentiles,
        warmup_count=int(warm.get("count", 0)),
        warmup_avg_ms=timings.get("Warmup (avg)", _us(warm, "avg")),
        init_ms=timings.get("Init"),
        first_ms=timings.get("First inference", _us(timed, "first")),
        version=_find_version(output),
        delegate_fallback=_DELEGATE_FALLBACK in output,
    )


def _inference_timings(lines: list[str]) -> dict[str, float]:
    """``Inference timings in us: Init: 16242, First inference: 360262, ...`` -> ms by label."""
    for line in lines:
        if line.startswith("Inference timings in us:"):
            body = line.split(":", 1)[1]
            pairs = re.findall(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUM})", body)
            return {label.strip(): float(v) / 1000.0 for label, v in pairs}
    return {}


def _tflite_failure_reason(lines: list[str]) -> str:
    for line in lines:
        if any(marker in line for marker in _TFLITE_ERRORS):
            return f"benchmark_model failed: {_strip_prefix(line)}"
    return "benchmark_model printed no timed 'count=' line (is this a TFLite benchmark_model binary?)"


_ORT_SECONDS = re.compile(rf"^P(\d+)\s+Latency:\s*({_NUM})\s*s\b")
_ORT_LINES = {
    "avg_ms": re.compile(rf"^Average inference time cost:\s*({_NUM})\s*ms"),
    "first_ms": re.compile(rf"^First inference time cost:\s*({_NUM})\s*ms"),
    "session_s": re.compile(rf"^Session creation time cost:\s*({_NUM})\s*s"),
    "count": re.compile(rf"^(?:Total inference requests|Runs)\s*:\s*({_NUM})"),
    "total_s": re.compile(rf"^Total inference (?:run )?time(?: cost)?:\s*({_NUM})\s*s"),
    "min_s": re.compile(rf"^Min Latency:\s*({_NUM})\s*s"),
    "max_s": re.compile(rf"^Max Latency:\s*({_NUM})\s*s"),
}


def _ort_values(lines: list[str]) -> tuple[dict[str, float], dict[int, float]]:
    values: dict[str, float] = {}
    percentiles: dict[int, float] = {}
    for line in lines:
        if m := _ORT_SECONDS.match(line):
            # "P999" is the 99.9th percentile; keep integer percentiles only
            if len(m.group(1)) <= 2:
                percentiles[int(m.group(1))] = float(m.group(2)) * 1000.0
            continue
        for key, pattern in _ORT_LINES.items():
            if (m := pattern.match(line)) and key not in values:
                values[key] = float(m.group(1))
    return values, percentiles


def parse_perf_test(output: str) -> BenchmarkSummary:
    """Parse ``onnxruntime_perf_test`` output (average in ms, percentiles in seconds)."""
    lines = [_strip_prefix(line) for line in output.splitlines()]
    values, percentiles = _ort_values(lines)
    if "avg_ms" not in values or values["avg_ms"] <= 0:
        reason = next((line for line in lines if "rror" in line or "fail" in line.lower()), "")
        msg = f"onnxruntime_perf_test failed: {reason}" if reason else "onnxruntime_perf_test printed no 'Average inference time cost'"
        raise BenchmarkFailed(msg, output)
    count = int(values.get("count", 0))
    if not count and "total_s" in values:
        count = max(1, round(values["total_s"] * 1000.0 / values["avg_ms"]))
    return BenchmarkSummary(
        tool="onnxruntime_perf_test",
        count=max(count, 1),
        avg_ms=values["avg_ms"],
        min_ms=values["min_s"] * 1000.0 if "min_s" in values else None,
        max_ms=values["max_s"] * 1000.0 if "max_s" in values else None,
        median_ms=percentiles.get(50),
        percentiles_ms=percentiles,
        init_ms=values["session_s"] * 1000.0 if "session_s" in values else None,
        first_ms=values.get("first_ms"),
        version=_find_version(output),
    )


def parse_output(tool: str, output: str) -> BenchmarkSummary:
    """Dispatch on the tool name (``benchmark_model`` or ``onnxruntime_perf_test``)."""
    if tool == "benchmark_model":
        return parse_benchmark_model(output)
    if tool == "onnxruntime_perf_test":
        return parse_perf_test(output)
    raise ValueError(f"unknown benchmark tool {tool!r}")
