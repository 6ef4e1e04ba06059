"""One error family for the harness; every error keeps the raw output that explains it."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every harness error. ``output`` is the raw tool/adb output (may be empty)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.output = output

    def __str__(self) -> str:
        return self.message


class DeviceOffline(HarnessError):
    """The device went away (unplugged, adb transport closed, adb server gone)."""


class BenchmarkFailed(HarnessError):
    """The benchmark tool ran but failed or printed nothing we can parse."""


class HarnessTimeout(HarnessError):
    """An adb call or a benchmark ran past its time limit."""


class UnsupportedModel(HarnessError):
    """The model/runtime combination cannot be measured on this device (retrying elsewhere won't help)."""


class MeasurementAborted(HarnessError):
    """The agent is shutting down and stopped a measurement that ran past the grace period."""
