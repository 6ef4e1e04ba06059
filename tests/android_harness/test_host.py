"""The host runner measures real ONNX models on this CPU with onnxruntime."""

from __future__ import annotations

import time

import numpy as np
import pytest

from android_harness.errors import UnsupportedModel
from android_harness.host import (
    HostRunner,
    cpu_model_name,
    host_device_class,
    host_device_info,
    litert_available,
    slugify_cpu,
)
from android_harness.runner import MeasureOptions

OPTIONS = MeasureOptions(warmup=10, runs=50, min_seconds=0.1)


def test_device_class_is_host_slash_cpu_slug():
    assert slugify_cpu("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz") == "intel-xeon-platinum-8375c"
    assert slugify_cpu("AMD EPYC 7R13 Processor") == "amd-epyc-7r13"
    assert cpu_model_name("processor\t: 0\nmodel name\t: Apple M2\n") == "Apple M2"
    assert host_device_class() == f"host/{slugify_cpu(cpu_model_name())}"
    info = host_device_info()
    assert (info.serial, info.kind, info.device_class) == ("host", "host", host_device_class())
    assert info.runtimes == (["onnxruntime", "tflite"] if litert_available() else ["onnxruntime"])


def test_measure_keeps_every_sample_and_meets_the_protocol(conv_onnx):
    started = time.perf_counter()
    stats = HostRunner().measure(conv_onnx, OPTIONS)
    assert time.perf_counter() - started >= 0.1  # timed runs lasted at least min_seconds
    assert stats.runs == len(stats.samples_ms) >= 50
    assert stats.median_ms == pytest.approx(float(np.median(stats.samples_ms)))
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.warmup == 10 and stats.tool == "onnxruntime" and stats.tool_version
    assert "threads=1" in stats.flags and "clock=wall" in stats.flags


def test_wall_and_cpu_clocks_agree_on_a_single_thread(lir_onnx):
    wall = HostRunner().measure(lir_onnx, OPTIONS)
    cpu = HostRunner().measure(lir_onnx, MeasureOptions(warmup=10, runs=50, min_seconds=0.1, clock="thread-cpu"))
    assert "clock=thread-cpu" in cpu.flags
    # CPU time never exceeds wall time by more than timer noise; on a busy host wall may be larger
    assert cpu.median_ms < wall.median_ms * 1.3
    assert cpu.median_ms > wall.median_ms / 3


def test_bigger_block_measures_slower(conv_onnx, lir_onnx, tmp_path):
    from shared.config import ConvConfig
    from shared.export import export_block_onnx

    big = tmp_path / "big.onnx"
    big.write_bytes(export_block_onnx(ConvConfig(cin=64, cout=64, h=56, w=56)))  # ~29x the MACs of conv_onnx
    small = HostRunner().measure(conv_onnx, OPTIONS)
    large = HostRunner().measure(big, OPTIONS)
    assert large.median_ms > 5 * small.median_ms


def test_unsupported_inputs_are_typed_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UnsupportedModel, match="cannot load"):
        HostRunner().measure(bad, OPTIONS)
    with pytest.raises(UnsupportedModel, match=r"\.onnx and \.tflite"):
        (tmp_path / "m.pb").write_bytes(b"x")
        HostRunner().measure(tmp_path / "m.pb", OPTIONS)
    with pytest.raises(UnsupportedModel, match="cpu delegate"):
        HostRunner().measure(bad, MeasureOptions(delegate="gpu"))


def _kernel_file(tmp_path, cfg) -> object:
    from shared.kernels import export_kernel_onnx

    path = tmp_path / f"{cfg.op}.onnx"
    path.write_bytes(export_kernel_onnx(cfg))
    return path


def test_layout_conversions_around_a_lone_conv_are_profiled_and_left_out(tmp_path):
    """A one-conv model on an x86 host runs NCHWc conversions a whole model does not pay around
    each conv: measured with ``exclude_layout_reorders`` their profiled time comes off each sample
    and the flag says how much."""
    from android_harness.host import profile_layout_reorders
    from shared.kernels import KernelConfig

    conv = _kernel_file(tmp_path, KernelConfig(op="conv", fn="Relu", dims=(32, 64, 56, 56, 3, 1, 1, 0)))
    reorders = profile_layout_reorders(conv, threads=1)
    if reorders == 0:
        pytest.skip("this CPU's onnxruntime adds no NCHWc conversions (no AVX2): nothing to leave out")
    options = MeasureOptions(warmup=2, runs=20, min_seconds=0.0)
    plain = HostRunner().measure(conv, options)
    lean = HostRunner().measure(conv, MeasureOptions(warmup=2, runs=20, min_seconds=0.0, exclude_layout_reorders=True))
    flag = next(f for f in lean.flags if f.startswith("layout_reorders_excluded_ms="))
    assert float(flag.split("=")[1]) > 0
    assert not any(f.startswith("layout_reorders") for f in plain.flags)
    assert lean.p10_ms < plain.p10_ms  # the same conv without the conversions its isolation adds


def test_a_model_that_is_only_a_conversion_keeps_its_time(tmp_path):
    """A reorder kernel's own conversions are the kernel: nothing is left out (the flag says 0)."""
    from android_harness.host import profile_layout_reorders
    from shared.kernels import KernelConfig

    reorder = _kernel_file(tmp_path, KernelConfig(op="reorder", fn="ReorderInput", dims=(64, 56 * 56, 8)))
    assert profile_layout_reorders(reorder, threads=1) == 0.0
    stats = HostRunner().measure(reorder, MeasureOptions(warmup=2, runs=10, min_seconds=0.0,
                                                         exclude_layout_reorders=True))
    assert "layout_reorders_excluded_ms=0.00000" in stats.flags
