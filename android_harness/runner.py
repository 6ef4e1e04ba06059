"""What every runner (host CPU, adb phone) takes and gives: options in, MeasurementStats out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from android_harness.errors import UnsupportedModel
from android_harness.stats import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_SPREAD
from shared.schemas import JOB_DEFAULTS, DeviceInfo, MeasurementStats, RuntimeSettings

FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "tflite": "tflite"}


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure. Phones: >= 10 warm-ups, >= 50 runs and >= 1 s; the host may use less time."""

    threads: int = 1
    warmup: int = JOB_DEFAULTS.warmup
    runs: int = JOB_DEFAULTS.runs
    min_seconds: float = JOB_DEFAULTS.min_seconds
    max_seconds: float = 60.0
    delegate: str = "cpu"
    max_spread: float = DEFAULT_MAX_SPREAD
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    clock: str = "wall"  # host only: "wall" or "thread-cpu" (the measuring thread's CPU time)
    # host onnxruntime only: leave out the NCHWc layout conversions onnxruntime adds around a model
    # that holds one kernel (a whole model keeps its tensors in that layout between kernels)
    exclude_layout_reorders: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1 or self.runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise ValueError("threads and runs must be >= 1, warmup and min_seconds >= 0")
        if self.clock not in ("wall", "thread-cpu"):
            raise ValueError(f"clock must be wall or thread-cpu, not {self.clock!r}")

    @classmethod
    def from_settings(cls, settings: RuntimeSettings, **kw: float | int) -> MeasureOptions:
        return cls(threads=settings.threads, delegate=settings.delegate, **kw)  # type: ignore[arg-type]

    def flags(self) -> list[str]:
        return [f"threads={self.threads}", f"warmup={self.warmup}", f"runs={self.runs}",
                f"min_seconds={self.min_seconds:g}", f"delegate={self.delegate}"]


def model_format(path: str | Path) -> str:
    """``onnx`` or ``tflite`` from the file name; anything else is unsupported."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedModel(f"{Path(path).name}: only .onnx and .tflite models can be measured")
    return FORMATS[suffix]


class Runner(Protocol):
    """A device that can measure a model file now."""

    def device_info(self) -> DeviceInfo: ...

    def measure(self, model_path: Path, options: MeasureOptions) -> MeasurementStats: ...
