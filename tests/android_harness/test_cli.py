"""``phone-agent`` as users run it: a subprocess, JSON on stdout, exit status 2 on errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from testkit.live_server import free_port
from testkit.standins import standin_path

REQUIRED = {"median_ms", "mean_ms", "p10_ms", "p90_ms", "runs", "samples_ms"}


def phone_agent(*args: str, adb_port: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if adb_port:
        env["ANDROID_ADB_SERVER_PORT"] = str(adb_port)
    return subprocess.run([sys.executable, "-m", "android_harness.cli", "--log-level", "WARNING", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_measure_on_host_prints_one_json_object(conv_onnx):
    proc = phone_agent("measure", "--serial", "host", "--model", str(conv_onnx), "--runs", "60",
                       "--warmup", "10", "--min-seconds", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert REQUIRED <= result.keys()
    assert result["runs"] == len(result["samples_ms"]) >= 60
    assert result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["device_class"].startswith("host/")


def test_errors_exit_2_with_one_line_saying_what_to_fix(tmp_path):
    proc = phone_agent("measure", "--serial", "host", "--model", str(tmp_path / "missing.onnx"), "--json")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"phone-agent: error: --model {tmp_path / 'missing.onnx'}: no such file"]
    proc = phone_agent()
    assert proc.returncode == 2 and "--server" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_devices_and_measure_through_adb(connected, adb_server, conv_onnx):
    _, serial, _ = connected
    proc = phone_agent("devices", "--json", adb_port=adb_server.port)
    assert proc.returncode == 0, proc.stderr
    devices = {d["serial"]: d for d in json.loads(proc.stdout)}
    assert devices["host"]["kind"] == "host"
    assert devices[serial]["device_class"] == "Pixel 7/gs201"
    proc = phone_agent("measure", "--serial", serial, "--model", str(conv_onnx), "--min-seconds", "0.1",
                       "--benchmark-binary", str(standin_path("onnxruntime_perf_test")), "--json",
                       adb_port=adb_server.port)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["tool"] == "onnxruntime_perf_test" and result["runs"] >= 50
    assert result["device_class"] == "Pixel 7/gs201"
    proc = phone_agent("measure", "--serial", "nope:1", "--model", str(conv_onnx), "--json", adb_port=adb_server.port)
    assert proc.returncode == 2 and "no such online adb device" in proc.stderr


def test_devices_lists_the_host_when_no_adb_server_answers():
    port = free_port()  # nothing listens there once closed
    proc = phone_agent("devices", "--json", "--adb-port", str(port))
    assert proc.returncode == 0, proc.stderr
    assert [d["serial"] for d in json.loads(proc.stdout)] == ["host"]
    assert "no adb devices listed" in proc.stderr and "--no-adb" in proc.stderr


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_one_off_commands_stop_the_adb_server_they_started(conv_onnx):
    """With no adb server on its port, adb (through adbutils) starts one; `devices` and `measure`
    must not leave it running after they exit. --no-adb on `measure` touches adb not at all."""
    import adbutils

    port = free_port()  # ANDROID_ADB_SERVER_PORT: the port the auto-started server listens on
    try:
        proc = phone_agent("devices", "--json", adb_port=port)
        assert proc.returncode == 0, proc.stderr
        assert "host" in [d["serial"] for d in json.loads(proc.stdout)]
        assert not _answers(port), "phone-agent devices left an adb server running"
        proc = phone_agent("measure", "--serial", "NOPE", "--model", str(conv_onnx), "--json", adb_port=port)
        assert proc.returncode == 2 and "no such online adb device" in proc.stderr
        assert not _answers(port), "phone-agent measure left an adb server running"
        proc = phone_agent("measure", "--serial", "NOPE", "--model", str(conv_onnx), "--json", "--no-adb",
                           adb_port=port)
        assert proc.returncode == 2 and "drop --no-adb" in proc.stderr.strip().splitlines()[-1]
        assert "daemon" not in proc.stderr  # adb was not started at all
    finally:
        if _answers(port):  # what the old code left behind
            adbutils.AdbClient(port=port).server_kill()
