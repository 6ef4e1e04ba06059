"""TFLite on the host (LiteRT) and through the adb path with the benchmark_model stand-in; runs
only where the optional `tflite` extra is installed (its own venv, see the Makefile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from android_harness.adb import AdbRunner, AdbSettings
from android_harness.host import HostRunner, litert_available
from android_harness.runner import MeasureOptions
from shared.config import ConvConfig
from shared.export import tflite_available
from testkit.standins import standin_path

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(not (tflite_available() and litert_available()),
                       reason="tflite extra not installed (make test-tflite)"),
]

OPTIONS = MeasureOptions(warmup=10, runs=50, min_seconds=0.1)


@pytest.fixture(scope="module")
def conv_tflite(tmp_path_factory) -> Path:
    from shared.export import export_block_tflite

    path = tmp_path_factory.mktemp("tflite") / "conv.tflite"
    path.write_bytes(export_block_tflite(ConvConfig(cin=16, cout=32, h=32, w=32)))
    return path


def test_host_measures_tflite_with_litert(conv_tflite, conv_onnx):
    stats = HostRunner().measure(conv_tflite, OPTIONS)
    assert stats.tool == "litert" and stats.runs == len(stats.samples_ms) >= 50
    onnx = HostRunner().measure(conv_onnx, OPTIONS)
    assert onnx.median_ms / 10 < stats.median_ms < onnx.median_ms * 10  # same block, two runtimes


def test_benchmark_model_through_adb(connected, conv_tflite):
    client, serial, emu = connected
    runner = AdbRunner(serial, client, {"benchmark_model": standin_path("benchmark_model")}, AdbSettings())
    stats = runner.measure(conv_tflite, OPTIONS)
    assert stats.tool == "benchmark_model" and stats.runs >= 50
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert len(emu.exec_log) == stats.attempts  # one pass per attempt: benchmark_model warms up itself
    argv = emu.exec_log[-1][0]
    assert "--warmup_runs=10" in argv and "--num_runs=50" in argv and argv[0] == "taskset f0"
