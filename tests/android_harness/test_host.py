"""The host runner measures real ONNX models on this CPU with onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from android_harness.errors import UnsupportedModel
from android_harness.host import (
    HostRunner,
    _ort_session,
    cpu_model_name,
    host_device_class,
    host_device_info,
    kernel_profile,
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


def _spinning_process_on(cpu: int) -> subprocess.Popen:
    """A process that keeps ``cpu`` busy (a competitor on a shared machine), pinned there."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(spin.pid, {cpu})
    return spin


def test_thread_cpu_clock_ignores_a_process_competing_for_the_core(tmp_path):
    """With one intra-op thread onnxruntime computes on the calling thread: pinned to one core beside
    a spinning process, the wall clock counts the competitor's slices too (each run is longer than a
    scheduler slice), the thread's CPU time does not, so the bench's thread-cpu p10 holds on a
    shared machine."""
    from shared.config import ConvConfig
    from shared.export import export_block_onnx

    model = tmp_path / "long.onnx"
    model.write_bytes(export_block_onnx(ConvConfig(cin=64, cout=64, h=64, w=96)))  # ~10 ms a run
    options = MeasureOptions(warmup=2, runs=12, min_seconds=0.0, max_attempts=1)
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        quiet = HostRunner().measure(model, replace(options, clock="thread-cpu")).p10_ms
        spin = _spinning_process_on(cpu)
        try:
            time.sleep(0.2)
            busy_cpu = HostRunner().measure(model, replace(options, clock="thread-cpu")).p10_ms
            busy_wall = HostRunner().measure(model, options).p10_ms
        finally:
            spin.kill()
            spin.wait()
    finally:
        os.sched_setaffinity(0, before)
    assert busy_wall > 1.5 * busy_cpu, (busy_wall, busy_cpu)  # the competitor took about half the core
    assert busy_cpu == pytest.approx(quiet, rel=0.25)  # the thread's own time did not change


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


def _excluded_ms(stats) -> float:
    return float(next(f for f in stats.flags if f.startswith("layout_reorders_excluded_ms=")).split("=")[1])


def _has_nchwc_pass(path) -> bool:
    """Whether this CPU's onnxruntime puts layout conversions or helpers in the model at all."""
    sess, feeds = _ort_session(path, 1, profile_prefix=str(path.parent / "probe"))
    for _ in range(3):
        sess.run(None, feeds)
    return kernel_profile(json.loads(Path(sess.end_profiling()).read_text()), skip_runs=1).helpers_ms > 0


def test_layout_conversions_around_a_lone_conv_are_profiled_and_left_out(tmp_path):
    """A one-conv model on an x86 host runs NCHWc conversions a whole model does not pay around
    each conv: measured with ``exclude_layout_reorders`` each profiled run loses its own
    conversions' time and the flag says how much (median per run)."""
    from shared.kernels import KernelConfig

    conv = _kernel_file(tmp_path, KernelConfig(op="conv", fn="Relu", dims=(32, 64, 56, 56, 3, 1, 1, 0)))
    if not _has_nchwc_pass(conv):
        pytest.skip("this CPU's onnxruntime adds no NCHWc conversions (no AVX2): nothing to leave out")
    options = MeasureOptions(warmup=2, runs=20, min_seconds=0.0)
    lean_options = MeasureOptions(warmup=2, runs=20, min_seconds=0.0, exclude_layout_reorders=True)
    # alternated, three of each: a slow stretch of a shared host only adds time, so the lowest p10s compare
    pairs = [(HostRunner().measure(conv, options), HostRunner().measure(conv, lean_options)) for _ in range(3)]
    plain, lean = pairs[0]
    assert _excluded_ms(lean) > 0
    assert "clock=ort-node" in lean.flags and lean.runs == 20
    assert not any(f.startswith("layout_reorders") for f in plain.flags)
    # the same conv without the conversions its isolation adds
    assert min(b.p10_ms for _, b in pairs) < min(a.p10_ms for a, _ in pairs)


def test_an_nchwc_upsample_is_measured_without_its_helper_conv(tmp_path):
    """An ``nchwc-linear`` resize kernel carries a 1x1 depthwise ``aux_`` conv that only puts its
    input in the NCHWc layout: its time is left out with the conversions', so the helper's cost
    (a large share here: 512 channels at 64x64, upsampled only 2x) does not reach the label."""
    from shared.kernels import KernelConfig

    up = _kernel_file(tmp_path, KernelConfig(op="resize", fn="nchwc-linear", dims=(512, 64, 64, 128, 128)))
    if not _has_nchwc_pass(up):
        pytest.skip("this CPU's onnxruntime has no NCHWc pass (no AVX2)")
    options = MeasureOptions(warmup=2, runs=20, min_seconds=0.0, exclude_layout_reorders=True)
    lean = HostRunner().measure(up, options)
    plain = HostRunner().measure(up, MeasureOptions(warmup=2, runs=20, min_seconds=0.0))
    assert 0 < _excluded_ms(lean) < plain.p10_ms
    assert lean.p10_ms < plain.p10_ms - 0.5 * _excluded_ms(lean)


def test_a_kernel_sample_is_its_own_node_time_run_by_run():
    """Each run's sample is the time of the nodes that are the kernel (conversions and ``aux_``
    helpers that started inside its window left out); a model of nothing but conversions is a
    reorder kernel and keeps them."""
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, dur, name, op):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    profile = [run(0, 100), node(1, 30, "ReorderInput", "ReorderInput"), node(40, 50, "out_nchwc", "Conv"),
               run(200, 300), node(201, 150, "ReorderInput", "ReorderInput"), node(360, 60, "aux_x_nchwc", "Conv"),
               node(430, 60, "out_nchwc", "Upsample"),
               run(600, 100), node(601, 20, "ReorderInput", "ReorderInput"), node(630, 60, "out_nchwc", "Conv")]
    prof = kernel_profile(profile, skip_runs=1)
    assert prof.samples_ms == pytest.approx([0.06, 0.06])
    assert prof.helpers_ms == pytest.approx(0.115)  # median of 0.21 and 0.02
    assert prof.nodes in (2, 3)
    # the second run lost 0.5 ms to another process inside its conv (wall 0.65 ms, CPU 0.15): its
    # kernel is its CPU time less the undisturbed time outside the runtime (0.02), in its conversion
    # (0.02) and outside nodes (0.01): the clean run's 0.1 ms again
    two = [run(0, 130), node(1, 20, "ReorderInput", "ReorderInput"), node(30, 100, "out_nchwc", "Conv"),
           run(200, 630), node(201, 20, "ReorderInput", "ReorderInput"), node(230, 600, "out_nchwc", "Conv")]
    mended = kernel_profile(two, run_clock=[(0.15, 0.148), (0.65, 0.15)])
    assert mended.samples_ms == pytest.approx([0.1, 0.1])
    assert kernel_profile(two).samples_ms == pytest.approx([0.1, 0.6])  # without the clocks: as profiled
    # CPU time never raises a sample above its node time
    assert kernel_profile(two, run_clock=[(0.15, 0.148), (0.95, 0.8)]).samples_ms == pytest.approx([0.1, 0.6])
    only = kernel_profile([run(0, 100), node(1, 80, "ReorderInput", "ReorderInput")])
    assert (only.samples_ms, only.helpers_ms, only.nodes) == ([0.08], 0.0, 1)


def test_a_model_that_is_only_a_conversion_keeps_its_time(tmp_path):
    """A reorder kernel's own conversions are the kernel: nothing is left out (the flag says 0)."""
    from shared.kernels import KernelConfig

    reorder = _kernel_file(tmp_path, KernelConfig(op="reorder", fn="ReorderInput", dims=(64, 56 * 56, 8)))
    stats = HostRunner().measure(reorder, MeasureOptions(warmup=2, runs=10, min_seconds=0.0,
                                                         exclude_layout_reorders=True))
    assert "layout_reorders_excluded_ms=0.00000" in stats.flags
