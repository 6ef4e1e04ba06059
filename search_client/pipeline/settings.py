"""Settings of one search run (saved as ``pipeline.json`` in its run folder, reloaded on resume)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class PipelineSettings(BaseModel):
    """Everything that decides what a run computes. Field names match the CLI flags."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("search", description="run name: the folder runs/<name>/")
    runs_dir: Path = Field(Path("runs"), description="parent of run folders")
    # data and model
    dataset: str = Field("synthetic", description="dataset kind understood by the data loaders")
    data_root: Path = Field(Path("runs/data/synthetic"), description="dataset folder (Cityscapes layout)")
    num_classes: int = Field(19, ge=2)
    preset: str = Field("synthetic-cpu", description="training preset of search_client.config")
    height: int = Field(128, ge=16, description="training crop / evaluation height")
    width: int = Field(256, ge=16)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(0.05, gt=0)
    seed: int = 0
    # phase lengths (iterations)
    pretrain_iters: int = Field(200, ge=0)
    search_iters: int = Field(200, ge=1)
    finetune_iters: int = Field(200, ge=0)
    eval_images: int | None = Field(None, ge=1, description="evaluate on the first N val images (None: all)")
    checkpoint_every: int = Field(50, ge=1)
    # search objective L + beta*Lreg + gamma*Laux + lambda*Ld
    beta: float = Field(0.01, ge=0)
    gamma: float = Field(1.0, ge=0)
    lam: float = Field(0.001, ge=0)
    distill_temperature: float = Field(1.0, gt=0)
    reg_mode: Literal["one-sided", "two-sided"] = "two-sided"
    target_ms: float | None = Field(None, gt=0, description="latency target; None: target_fraction of the supernet")
    target_fraction: float = Field(0.5, gt=0, le=1)
    arch_lr: float = Field(3e-4, gt=0, description="Adam lr of the Gumbel logits")
    arch_betas: tuple[float, float] = (0.5, 0.999)
    gate_lr: float = Field(0.01, gt=0, description="Adam lr of the DWBC gate parameters")
    tau_start: float = Field(5.0, gt=0)
    tau_end: float = Field(0.5, gt=0)
    # latency: resolution at which the network is predicted, exported and measured
    latency_height: int = Field(256, ge=16)
    latency_width: int = Field(512, ge=16)
    # farm
    device_class: str | None = Field(None, description="target device class; None: this host")
    runtime: str = "onnxruntime"
    server: str = "http://127.0.0.1:8000"
    token: str | None = None
    cache_dir: Path | None = None
    measure: bool = True
    export_tflite: bool = False
    measure_supernet: bool = Field(False, description="also measure the supernet on the device")

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

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

    def merged_with_saved(self) -> PipelineSettings:
        """Resume rule: a run folder keeps the settings it started with (only farm access may change)."""
        path = self.run_dir / "pipeline.json"
        if not path.exists():
            return self
        saved = PipelineSettings.load(self.run_dir)
        volatile = {"server", "token", "cache_dir", "measure", "measure_supernet"}
        changed = {k for k in self.model_fields if k not in volatile and getattr(saved, k) != getattr(self, k)}
        if changed:
            log.warning("run %s resumes with its saved settings; ignoring changes to %s", self.name, ", ".join(sorted(changed)))
        return saved.model_copy(update={k: getattr(self, k) for k in volatile})
