"""Fixtures: a real adb server on its own port (killed at teardown), a loopback device emulator,
and small ONNX models exported from the shared block library."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConvConfig, LIRConfig
from shared.export import export_block_onnx
from testkit.adb_emulator import AdbServer, DeviceEmulator


@pytest.fixture(scope="session")
def adb_server():
    with AdbServer() as server:
        yield server


@pytest.fixture
def emulator():
    with DeviceEmulator() as emu:
        yield emu


@pytest.fixture
def connected(adb_server, emulator):
    """(adb client, serial, emulator) for a freshly connected emulated phone."""
    serial = adb_server.connect(emulator.address)
    yield adb_server.client(), serial, emulator
    adb_server.disconnect(emulator.address)


@pytest.fixture(scope="session")
def conv_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "conv.onnx"
    path.write_bytes(export_block_onnx(ConvConfig(cin=16, cout=32, h=32, w=32)))
    return path


@pytest.fixture(scope="session")
def lir_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "lir.onnx"
    path.write_bytes(export_block_onnx(LIRConfig(cin=32, cmid=96, cout=32, h=28, w=28)))
    return path
