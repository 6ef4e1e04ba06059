"""Settings of one search run (saved as ``pipeline.json`` in its run folder, reloaded on resume).

The training recipe (data, model, SGD schedule, β/γ/λ, arch lr, temperatures) is a
``search_client.config.RunConfig`` built from ``preset`` + ``overrides``; this object adds what only
the pipeline needs: phase budgets, the latency target, the farm to talk to, the measured resolution.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from search_client.config import RunConfig, build_config
from search_client.pipeline.state import PHASES, RunState

log = logging.getLogger(__name__)

# Fields that may change between a run and its resume without changing what is computed.
VOLATILE = frozenset({"server", "token", "cache_dir", "measure", "progress", "device"})


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
    target_position: float | None = Field(
        None, ge=0, le=1, description="target at this share of the way from the smallest to the largest derivable "
                                      "network (measured when the run measures); overrides target_fraction")
    target_tolerance: float = Field(0.1, ge=0, lt=1, description="derivation keeps predicted ms within this of target")
    # GMACs target (Eq. 8's regularizer on computation): when set, the search regularizes and the
    # derivation holds the analytic GMACs at gmacs_height x gmacs_width instead of the latency
    target_gmacs: float | None = Field(None, gt=0)
    gmacs_height: int = Field(512, ge=32)
    gmacs_width: int = Field(1024, ge=32)
    gate_lr: float = Field(0.01, gt=0, description="Adam lr of the DWBC gate weights")
    gate_init: float = Field(0.6, gt=0, description="PaS gate initial value (threshold 0.5)")
    # resolution at which latency is predicted, exported, measured and targeted (batch 1);
    # None: the preset's search.latency_size (cityscapes-paper: 512x1024, as the paper measures)
    latency_height: int | None = Field(None, ge=32)
    latency_width: int | None = Field(None, ge=32)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where every phase computes; auto: cuda when available (torchrun: one GPU per process)")
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
        4, ge=0, le=10,
        description="derive: measured candidates at most; while one misses the target the next predicted aim "
                    "comes from every (predicted, measured) pair so far (needs measure)")
    derive_repeats: int = Field(2, ge=1, le=10, description="derive: measurement jobs per candidate")
    campaign_configs: int = Field(
        0, ge=0, le=50_000,
        description="when the device class has no predictor for the runtime: measure this many block configs of "
                    "the supernet's space on it (queued before pretraining) and fit one before the search")
    export_tflite: bool = False
    progress: bool | None = Field(None, description="progress bars (None: when on a terminal)")

    @property
    def latency_size(self) -> tuple[int, int]:
        """(H, W) of the latency target: the flags when given, else the run config's."""
        h, w = self.run_config().search.latency_size
        return self.latency_height or h, self.latency_width or w

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
        return {k for k in mine if k not in VOLATILE | IDENTITY and mine[k] != theirs[k]}

    def changes_from(self, saved: PipelineSettings) -> list[SettingChange]:
        """Every setting that differs from ``saved``, with the phase that first uses it (run-config
        overrides one leaf at a time, e.g. ``search.latency_weight``)."""
        changes = []
        for name in sorted(self.changed_fields(saved)):
            if name == "overrides":
                changes.extend(_override_changes(saved.overrides, self.overrides))
            else:
                changes.append(SettingChange(name, FLAGS.get(name, name), PINNED_BY.get(name, PHASES[0]),
                                             getattr(saved, name), getattr(self, name)))
        return changes

    def merged_with_saved(self, restart_from: str | None = None, given: frozenset[str] | None = None) -> PipelineSettings:
        """Resume rule: a changed setting applies while the phase that first uses it has not started
        (``restart_from`` counts that phase and the later ones as not started); otherwise the run stops
        with :class:`PinnedSettings`. Farm access (server, token, cache) may always change.

        ``given``: the settings the command line gave; the others keep their saved values (a rerun of
        a shorter command resumes). None: every field of ``self`` counts.
        """
        path = self.run_dir / "pipeline.json"
        if not path.exists():
            return self
        saved = PipelineSettings.load(self.run_dir)
        wanted = self if given is None else saved.updated_with(self, given)
        changes = wanted.changes_from(saved)
        state = RunState(self.run_dir)
        restarted = PHASES[PHASES.index(restart_from):] if restart_from else ()
        pinned = [c for c in changes if c.phase not in restarted and state.started(c.phase)]
        if pinned:
            raise PinnedSettings(self, pinned, state)
        for c in changes:
            log.info("run %s: %s changed from %s to %s (phase %s has not started: applied)",
                     self.name, c.flag, _show(c.old), _show(c.new), c.phase)
        return wanted

    def updated_with(self, other: PipelineSettings, fields: frozenset[str]) -> PipelineSettings:
        """These settings with ``fields`` (and farm access) taken from ``other``; run-config
        overrides are merged leaf by leaf."""
        from search_client.config import merge_dicts

        update = {k: getattr(other, k) for k in (fields | VOLATILE) - {"overrides"}}
        if "overrides" in fields:
            update["overrides"] = merge_dicts(self.overrides, other.overrides)
        return self.model_copy(update=update)


# Fields that only say which folder the run lives in.
IDENTITY = frozenset({"name", "runs_dir"})

# The phase that first uses each setting: once it has started, the setting is pinned. A field not
# listed here is pinned from the first phase on (never silently changed mid-run).
PINNED_BY: dict[str, str] = {
    "preset": "pretrain", "pretrain_iters": "pretrain",
    "search_iters": "search", "target_ms": "search", "target_fraction": "search", "target_position": "search",
    "target_gmacs": "search", "gmacs_height": "search", "gmacs_width": "search", "gate_lr": "search",
    "gate_init": "search", "latency_height": "search", "latency_width": "search", "device_class": "search",
    "runtime": "search", "campaign_configs": "search",
    "target_tolerance": "derive", "calibrate_rounds": "derive",
    "finetune_iters": "finetune",
    "measure_supernet": "export", "export_tflite": "export",
    "measure_repeats": "measure",
}
# Run-config overrides: these leaves are first used after pretraining; every other one by pretrain.
OVERRIDE_PINNED_BY: dict[str, str] = {"search.finetune_iterations": "finetune", "search": "search"}
FLAGS: dict[str, str] = {
    "preset": "--preset", "pretrain_iters": "--pretrain-iters", "search_iters": "--search-iters",
    "finetune_iters": "--finetune-iters", "target_ms": "--target-ms", "target_fraction": "--target-fraction",
    "target_position": "--target-position", "target_gmacs": "--target-gmacs", "gmacs_height": "--gmacs-size",
    "gmacs_width": "--gmacs-size",
    "latency_height": "--latency-size", "latency_width": "--latency-size", "device_class": "--device-class",
    "runtime": "--runtime", "campaign_configs": "--campaign", "measure_supernet": "--measure-supernet", "export_tflite": "--tflite",
}


@dataclass(frozen=True)
class SettingChange:
    field: str  # settings field, or the dotted run-config path of an override
    flag: str  # how the user sets it
    phase: str  # the phase that first uses it
    old: Any
    new: Any


class PinnedSettings(ValueError):
    """A rerun changed settings that a phase already started with; the message says how to go on."""

    def __init__(self, settings: PipelineSettings, pinned: list[SettingChange], state: RunState):
        self.pinned = pinned
        first = min((c.phase for c in pinned), key=PHASES.index)
        what = ", ".join(f"{c.flag} {_show(c.old)} -> {_show(c.new)}" for c in pinned)
        super().__init__(
            f"run {settings.name!r} changed {what}, but phase {first!r} already started with the old "
            f"value{'s' if len(pinned) > 1 else ''} ({state.dir / first}); rerun without the change, start a "
            f"new run with another --name, or pass --restart-from {first} to redo {first} and every later phase")


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _override_changes(old: dict[str, Any], new: dict[str, Any]) -> list[SettingChange]:
    old_leaves = _leaves(json.loads(json.dumps(old, default=str)))
    new_leaves = _leaves(json.loads(json.dumps(new, default=str)))
    changes = []
    for path in sorted(set(old_leaves) | set(new_leaves)):
        if old_leaves.get(path) != new_leaves.get(path):
            phase = OVERRIDE_PINNED_BY.get(path) or OVERRIDE_PINNED_BY.get(path.split(".")[0], "pretrain")
            changes.append(SettingChange(path, f"--set {path}", phase, old_leaves.get(path), new_leaves.get(path)))
    return changes
