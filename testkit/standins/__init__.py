"""Host stand-ins for the on-device benchmark tools: python scripts that really run the model (with
onnxruntime, or LiteRT for .tflite) and print the real tools' output formats. They are what the adb
emulator executes when the harness pushes a "benchmark binary" in tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

TOOLS = ("benchmark_model", "onnxruntime_perf_test")


def standin_path(tool: str) -> Path:
    """Path of the stand-in script for ``benchmark_model`` or ``onnxruntime_perf_test``."""
    if tool not in TOOLS:
        raise ValueError(f"no stand-in for {tool!r}; choose one of {TOOLS}")
    return Path(__file__).with_name(f"{tool}.py")
