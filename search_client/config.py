"""Run configurations: one frozen pydantic model per concern, saved with every checkpoint.

A :class:`RunConfig` is everything a run folder needs to be resumed from alone: the dataset, the
architecture, the training recipe, the loss weights of the search (β, γ, λ) and the search/fine-tune
budgets. Presets carry the paper's settings (``cityscapes-paper``) and a small CPU recipe
(``synthetic-cpu``); files (JSON or YAML) may override any field of a preset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DatasetKind = Literal["cityscapes", "ade20k", "voc"]
NUM_CLASSES: dict[str, int] = {"cityscapes": 19, "ade20k": 150, "voc": 21}
IGNORE_INDEX = 255


class ConfigError(ValueError):
    """A run configuration file or override that cannot be used; the message says what to fix."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Frozen):
    kind: DatasetKind = "cityscapes"
    root: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    # Training crop (H, W); pixels padded in to reach it are labelled 255.
    crop: tuple[int, int] = (512, 1024)
    # Random scale factors relative to the stored image (or to base_size when set).
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 2.0)
    # "choice": one of `scales`; "range": uniform between min(scales) and max(scales) (BiSeNetV2 style).
    scale_mode: Literal["choice", "range"] = "choice"
    base_size: tuple[int, int] | None = None
    flip: bool = True
    color_jitter: float = Field(0.4, ge=0.0, le=1.0, description="brightness/contrast/saturation strength")
    # Single-scale evaluation: the image is resized to eval_size, logits go back to the label size.
    eval_size: tuple[int, int] | None = (512, 1024)
    num_workers: int = Field(2, ge=0)
    # Cityscapes: read `*_gtFine_labelTrainIds.png` instead of mapping labelIds when they exist.
    prefer_train_ids: bool = False

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.kind]

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("scales must be a non-empty list of positive factors")
        if min(self.crop) < 1:
            raise ValueError("crop must be positive (H, W)")
        return self


class TrainConfig(_Frozen):
    iterations: int = Field(160_000, ge=1)
    batch_size: int = Field(8, ge=1, description="per process (per GPU)")
    lr: float = Field(0.1, gt=0)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_iters: int = Field(1000, ge=0)
    warmup_start: float = Field(0.1, gt=0, le=1, description="lr factor at iteration 0 of the warm-up")
    # OHEM cross-entropy: keep pixels with loss > -log(ohem_thresh), at least ohem_min_kept of valid pixels.
    ohem_thresh: float = Field(0.7, gt=0, lt=1)
    ohem_min_kept: float = Field(1 / 16, gt=0, le=1)
    amp: bool = Field(True, description="mixed precision; only ever used on CUDA")
    sync_bn: bool = False
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only at the end")
    eval_batch_size: int = Field(1, ge=1)
    seed: int = 0
    deterministic: bool = False


class SearchConfig(_Frozen):
    """Loss weights and budgets of the search and fine-tune phases (paper: β=0.01, γ=1.0, λ=0.001)."""

    aux_weight: float = Field(1.0, ge=0, description="γ")
    latency_weight: float = Field(0.01, ge=0, description="β")
    distill_weight: float = Field(0.001, ge=0, description="λ")
    # Ld = Σ over pixels of KL(q_s ‖ q_t) (Eq. 10, student first); "teacher-student" is KL(q_t ‖ q_s).
    distill_direction: Literal["student-teacher", "teacher-student"] = "student-teacher"
    # "sum": summed over the pixels of each image (Eq. 10), averaged over the batch; "mean": averaged.
    distill_reduction: Literal["sum", "mean"] = "sum"
    iterations: int = Field(40_000, ge=1)
    finetune_iterations: int = Field(40_000, ge=1)
    arch_lr: float = Field(3e-4, gt=0)
    target_ms: float | None = Field(None, gt=0)
    reg_mode: Literal["one-sided", "two-sided"] = "one-sided"
    tau_start: float = Field(10.0, gt=0)
    tau_end: float = Field(0.1, gt=0)
    # Input size (H, W) at which the latency of blocks and networks is predicted, measured and targeted.
    latency_size: tuple[int, int] = (512, 1024)


class RunConfig(_Frozen):
    name: str = "run"
    arch: str = "supernet"
    model: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of build_model")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's Cityscapes recipe (Experimental Settings); per-GPU batch, scale set, crop, lr, budgets.
    "cityscapes-paper": {
        "name": "cityscapes-paper",
        "arch": "supernet",
        "data": {"kind": "cityscapes", "root": "data/cityscapes", "crop": (512, 1024),
                 "scales": (0.5, 0.75, 1.0, 2.0), "eval_size": (512, 1024), "num_workers": 4},
        "train": {"iterations": 160_000, "batch_size": 8, "lr": 0.1, "warmup_iters": 1000,
                  "checkpoint_every": 2000, "log_every": 50, "eval_every": 10_000},
        "search": {"iterations": 40_000, "finetune_iterations": 40_000, "aux_weight": 1.0,
                   "latency_weight": 0.01, "distill_weight": 0.001, "latency_size": (512, 1024)},
    },
    # Minutes on 2 CPU cores: synthetic street scenes (make-synthetic, 256x512) seen at half resolution
    # (base_size), 64x128 crops; evaluation at 128x256 with the logits resized to the 256x512 labels.
    "synthetic-cpu": {
        "name": "synthetic-cpu",
        "arch": "supernet",
        "data": {"kind": "cityscapes", "root": "data/synthetic", "base_size": (128, 256), "crop": (64, 128),
                 "scales": (0.75, 1.0, 1.25, 1.5), "scale_mode": "range", "eval_size": (128, 256),
                 "num_workers": 0, "color_jitter": 0.2},
        "train": {"iterations": 150, "batch_size": 4, "lr": 0.05, "warmup_iters": 10,
                  "checkpoint_every": 50, "log_every": 10, "eval_every": 0},
        "search": {"iterations": 60, "finetune_iterations": 60, "latency_size": (256, 512)},
    },
}


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_dicts(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A preset (or the defaults) with nested overrides applied, validated."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}")
    raw = merge_dicts(PRESETS[preset] if preset else {}, overrides or {})
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid run config at {where or 'top level'}: {first['msg']}") from exc


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Raw dict from a JSON or YAML file (YAML needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # JSON and YAML raise different families; both mean "fix the file"
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return data


def load_config(path: Path | str, preset: str | None = None) -> RunConfig:
    """A config file, optionally on top of a preset (the file may also name one under ``preset``)."""
    data = read_config_file(path)
    preset = data.pop("preset", preset)
    return build_config(preset, data)


def save_config(cfg: RunConfig, path: Path | str) -> None:
    Path(path).write_text(cfg.to_json() + "\n")
