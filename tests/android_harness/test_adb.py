"""The adb runner end to end through the real adb client and server against the loopback emulator."""

from __future__ import annotations

import os
import threading
import time

import pytest

from android_harness.adb import (
    AdbRunner,
    AdbSettings,
    big_core_mask,
    parse_df_available_kb,
    parse_temperatures,
    timed_run_count,
)
from android_harness.adb_io import DeviceIO
from android_harness.errors import BenchmarkFailed, DeviceOffline, HarnessError, HarnessTimeout
from android_harness.host import HostRunner
from android_harness.runner import MeasureOptions
from testkit.standins import standin_path

FAST = MeasureOptions(warmup=10, runs=50, min_seconds=0.1, max_seconds=10)


def make_runner(connected, **settings) -> AdbRunner:
    client, serial, _ = connected
    binaries = {"onnxruntime_perf_test": standin_path("onnxruntime_perf_test"),
                "benchmark_model": standin_path("benchmark_model")}
    return AdbRunner(serial, client, binaries, AdbSettings(call_timeout_s=15, **settings))


def test_device_info_and_class_from_getprop_and_sysfs(connected):
    info = make_runner(connected).device_info()
    assert info.device_class == "Pixel 7/gs201"
    assert (info.manufacturer, info.android_release, info.abi) == ("Google", "14", "arm64-v8a")
    assert info.cpu_max_freq_khz == [1803000] * 4 + [2348000] * 2 + [2850000] * 2
    assert info.thermal_zones == 2
    assert info.runtimes == ["onnxruntime", "tflite"]  # both benchmark tools were given
    client, serial, _ = connected
    only_tflite = AdbRunner(serial, client, {"benchmark_model": standin_path("benchmark_model")}, AdbSettings())
    assert only_tflite.device_info().runtimes == ["tflite"]


def test_measure_onnx_pushes_once_pins_big_cores_and_matches_host(connected, conv_onnx):
    runner = make_runner(connected)
    emu = connected[2]
    first = runner.measure(conv_onnx, FAST)
    second = runner.measure(conv_onnx, FAST)
    sends = [path for cmd, path in emu.sync_log if cmd == "SEND"]
    assert len(sends) == 2, sends  # the tool binary and the model, each once
    runs = [argv for argv, _ in emu.exec_log]
    assert all(argv[0] == "taskset f0" for argv in runs)  # 4 big cores of the 8
    # perf_test: a warm-up pass of `warmup` runs, then a timed pass sized to min_seconds
    assert runs[0][runs[0].index("-r") + 1] == "10"
    assert int(runs[1][runs[1].index("-r") + 1]) >= 50
    host = HostRunner().measure(conv_onnx, FAST)
    for stats in (first, second):
        assert stats.tool == "onnxruntime_perf_test" and stats.runs >= 50 and stats.warmup == 10
        assert stats.temp_before_c == 41.5
        assert stats.p10_ms <= stats.median_ms <= stats.p90_ms
        assert host.median_ms / 3 < stats.median_ms < host.median_ms * 3  # same model, same CPU


def test_failing_benchmark_raises_with_its_output(connected, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(BenchmarkFailed) as info:
        make_runner(connected).measure(bad, FAST)
    assert "exited with status 1" in str(info.value)
    assert "Error: onnxruntime_perf_test" in info.value.output


def test_tflite_model_without_benchmark_binary_says_what_to_pass(connected, tmp_path):
    client, serial, _ = connected
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(HarnessError, match="--benchmark-binary"):
        AdbRunner(serial, client, {}).measure(model, FAST)


def test_emulator_killed_mid_run_gives_device_offline_without_hanging(connected, lir_onnx):
    runner = make_runner(connected)
    runner.device_info()
    emu = connected[2]
    killer = threading.Timer(1.5, emu.kill)
    killer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeviceOffline) as info:
            runner.measure(lir_onnx, MeasureOptions(warmup=10, runs=50, min_seconds=20, max_seconds=30))
    finally:
        killer.cancel()
    assert time.monotonic() - started < 10
    assert connected[1] in str(info.value)


def test_every_shell_call_has_a_deadline(connected):
    client, serial, emu = connected
    io = DeviceIO(client, serial, timeout_s=10)
    started = time.monotonic()
    with pytest.raises(HarnessTimeout):
        io.shell(["sleep", "5"], timeout_s=0.5)
    assert time.monotonic() - started < 3


def test_low_free_space_evicts_oldest_models(adb_server, conv_onnx):
    from testkit.adb_emulator import DeviceEmulator

    with DeviceEmulator(capacity_kb=1350) as emu:
        models = emu.root / "data/local/tmp/rtseg/models"
        models.mkdir(parents=True)
        for name, age in (("old.onnx", 3000), ("newer.onnx", 1000)):
            (models / name).write_bytes(b"\0" * 600 * 1024)
            os.utime(models / name, (time.time() - age, time.time() - age))
        serial = adb_server.connect(emu.address)
        try:
            runner = AdbRunner(serial, adb_server.client(), settings=AdbSettings(min_free_kb=150))
            remote = runner.push_model(conv_onnx)
        finally:
            adb_server.disconnect(emu.address)
        assert not (models / "old.onnx").exists()
        assert (models / "newer.onnx").exists()
        assert (emu.root / remote.lstrip("/")).read_bytes() == conv_onnx.read_bytes()


def test_cool_down_waits_for_the_hottest_zone_and_is_bounded(connected):
    emu = connected[2]
    emu.set_temperatures([39000, 61000])
    runner = make_runner(connected, cool_threshold_c=45, cool_max_wait_s=0.6, cool_poll_s=0.1)
    started = time.monotonic()
    assert runner.wait_until_cool() == 61.0  # never cooled: gives up after the bound
    assert 0.5 < time.monotonic() - started < 3
    threading.Timer(0.3, emu.set_temperatures, args=([39000, 42000],)).start()
    runner = make_runner(connected, cool_threshold_c=45, cool_max_wait_s=5, cool_poll_s=0.1)
    assert runner.wait_until_cool() == 42.0
    emu.set_temperatures([])
    assert make_runner(connected).wait_until_cool() is None  # a phone without readable zones still works


def test_a_fresh_reading_after_a_run_stands_in_for_the_next_check(connected):
    emu = connected[2]
    runner = make_runner(connected, cool_threshold_c=45, reading_fresh_s=60)
    assert runner.temperature_c() == 41.5
    shells = len(emu.fs.command_log)
    assert runner.wait_until_cool() == 41.5 and len(emu.fs.command_log) == shells  # no new adb call
    stale = make_runner(connected, cool_threshold_c=45, reading_fresh_s=0)
    stale.temperature_c()
    stale.wait_until_cool()
    assert len(emu.fs.command_log) == shells + 2


def test_big_core_mask_rules():
    assert big_core_mask([1803000] * 4 + [2348000] * 2 + [2850000] * 2, threads=1) == 0xF0
    assert big_core_mask([1800000] * 4 + [2400000] * 4, threads=4) == 0xF0
    assert big_core_mask([1800000] * 6 + [2400000] * 2, threads=4) == 0xC3  # fastest 2 + 2 more (lowest index)
    assert big_core_mask([2000000] * 8, threads=1) is None  # all alike: no pinning
    assert big_core_mask([], threads=1) is None


def test_small_parsers():
    df = "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/dm-5 1000 400 600 40% /data\n"
    assert parse_df_available_kb(df) == 600
    assert parse_df_available_kb("df: /x: No such file") is None
    temps = parse_temperatures("/t0/temp:41500\n/t1/temp:-273000\n/t2/temp:385\n/t3/temp:n/a\n")
    assert temps == {"/t0/temp": 41.5, "/t2/temp": 38.5}
    assert timed_run_count(MeasureOptions(runs=50, min_seconds=1.0, max_seconds=60), avg_ms=2.0) == 500
    assert timed_run_count(MeasureOptions(runs=50, min_seconds=1.0, max_seconds=60), avg_ms=100.0) == 50
