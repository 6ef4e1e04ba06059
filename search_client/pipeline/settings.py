"""Settings of one search run (saved as ``pipeline.json`` in its run folder, reloaded on resume).

The training recipe (data, model, SGD schedule, β/γ/λ, arch lr, temperatures) is a
``search_client.config.RunConfig`` built from ``preset`` + ``overrides``; this object adds what only
the pipeline needs: phase budgets, the latency target, the farm to talk to, the measured resolution.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from search_client.config import RunConfig, build_config

log = logging.getLogger(__name__)

# Fields that may change between a run and its resume without changing what is computed.
VOLATILE = frozenset({"server", "token", "cache_dir", "measure", "progress"})


class PipelineSettings(BaseModel):
    """Everything that decides what a run computes. Field names match the CLI flags."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("search", min_length=1, description="run name: the folder <runs_dir>/<name>/")
    runs_dir: Path = Field(Path("runs"), description="parent of run folders")
    preset: str = Field("synthetic-cpu", description="training preset of search_client.config")
    overrides: dict[str, Any] = Field(default_factory=dict, description="nested RunConfig overrides")
    # phase budgets (iterations); None: the preset's train.iterations / search.iterations / finetune_iterations
    pretrain_iters: int | None = Field(None, ge=0)
    search_iters: int | None = Field(None, ge=1)
    finetune_iters: int | None = Field(None, ge=0)
    # latency target: target_ms, or target_fraction x the supernet's predicted latency
    target_ms: float | None = Field(None, gt=0)
    target_fraction: float = Field(0.5, gt=0, le=1)
    target_tolerance: float = Field(0.1, ge=0, lt=1, description="derivation keeps predicted ms within this of target")
    # GMACs target (Eq. 8's regularizer on computation): when set, the search regularizes and the
    # derivation holds the analytic GMACs at gmacs_height x gmacs_width instead of the latency
    target_gmacs: float | None = Field(None, gt=0)
    gmacs_height: int = Field(512, ge=32)
    gmacs_width: int = Field(1024, ge=32)
    gate_lr: float = Field(0.01, gt=0, description="Adam lr of the DWBC gate weights")
    gate_init: float = Field(0.6, gt=0, description="PaS gate initial value (threshold 0.5)")
    # resolution at which latency is predicted, exported and measured (batch 1)
    latency_height: int = Field(256, ge=32)
    latency_width: int = Field(512, ge=32)
    # farm
    device_class: str | None = Field(None, description="target device class; None: this host's class")
    runtime: str = "onnxruntime"
    server: str = "http://127.0.0.1:8000"
    token: str | None = None
    cache_dir: Path | None = None
    measure: bool = Field(True, description="upload the final network for a real measurement")
    measure_supernet: bool = Field(False, description="also measure the supernet on the device")
    measure_repeats: int = Field(
        3, ge=1, le=10, description="separate measurement jobs of the final network; measured_ms is their median")
    calibrate_rounds: int = Field(
        3, ge=0, le=10,
        description="derive: measure the compact network on the device and re-aim the predicted target by "
                    "measured/predicted while the measurement misses the target (needs measure)")
    export_tflite: bool = False
    progress: bool | None = Field(None, description="progress bars (None: when on a terminal)")

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def run_config(self) -> RunConfig:
        overrides = {**self.overrides, "name": self.name}
        return build_config(self.preset, overrides)

    def save(self) -> Path:
        path = self.run_dir / "pipeline.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2, exclude={"token"}) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: Path) -> PipelineSettings:
        path = Path(run_dir) / "pipeline.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: not a run folder (start it with 'rtseg-search run')")
        return cls.model_validate(json.loads(path.read_text()))

    def changed_fields(self, other: PipelineSettings) -> set[str]:
        # Compare as saved (JSON): tuples and lists, Paths and strings must not count as changes.
        mine, theirs = self.model_dump(mode="json"), other.model_dump(mode="json")
        return {k for k in mine if k not in VOLATILE and mine[k] != theirs[k]}

    def merged_with_saved(self) -> PipelineSettings:
        """Resume rule: a run folder keeps the settings it started with (only farm access may change)."""
        path = self.run_dir / "pipeline.json"
        if not path.exists():
            return self
        saved = PipelineSettings.load(self.run_dir)
        changed = self.changed_fields(saved)
        if changed:
            log.warning("run %s resumes with its saved settings; ignoring changes to %s", self.name, ", ".join(sorted(changed)))
        return saved.model_copy(update={k: getattr(self, k) for k in VOLATILE})
