"""The adb device emulator speaks the real protocol: the real adb command line and adbutils work."""

from __future__ import annotations

import os

from android_harness.adb_io import DeviceIO


def test_adb_cli_push_shell_and_pull_round_trip(connected, adb_server, tmp_path):
    client, serial, emu = connected
    payload = os.urandom(700_000)  # several WRTE payloads and sync DATA chunks
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    out = adb_server.run_adb("-s", serial, "push", str(src), "/data/local/tmp/x/blob.bin")
    assert "1 file pushed" in out, out
    assert (emu.root / "data/local/tmp/x/blob.bin").read_bytes() == payload
    assert adb_server.run_adb("-s", serial, "shell", "getprop", "ro.product.model").strip() == "Pixel 7"
    adb_server.run_adb("-s", serial, "pull", "/data/local/tmp/x/blob.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_adbutils_shell_exit_status_globs_and_redirects(connected):
    client, serial, emu = connected
    device = client.device(serial)
    assert device.getprop("ro.board.platform") == "gs201"
    assert device.shell2(["ls", "/nonexistent"]).returncode == 1
    assert device.shell2("false || echo fallback").output.strip() == "fallback"
    io = DeviceIO(client, serial, timeout_s=10)
    rc, out = io.shell("cat /sys/class/thermal/thermal_zone*/temp /missing 2>/dev/null")
    assert rc == 1 and out.split() == ["38000", "41500"]
    assert io.shell(["echo", "a b;c"]) == (0, "a b;c\n")  # quoted arguments stay one word


def test_sync_stat_list_and_missing_path(connected, tmp_path):
    client, serial, emu = connected
    io = DeviceIO(client, serial, timeout_s=10)
    (tmp_path / "f.txt").write_text("hello")
    assert io.stat("/data/local/tmp/nope") is None
    io.push(tmp_path / "f.txt", "/data/local/tmp/d/f.txt", 0o640)
    entry = io.stat("/data/local/tmp/d/f.txt")
    assert entry is not None and entry.size == 5 and entry.mode & 0o777 == 0o640
    assert [e.name for e in io.listdir("/data/local/tmp/d")] == ["f.txt"]
    assert client.device(serial).sync.read_text("/data/local/tmp/d/f.txt") == "hello"
