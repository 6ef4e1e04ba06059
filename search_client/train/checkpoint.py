"""Checkpoints of a run folder: ``<run>/checkpoints/iter_0001000.pt``, written atomically.

A checkpoint holds the model, every optimizer, scheduler and grad scaler by name, the RNG states of
every rank (python, numpy, torch, CUDA), the data position (epoch, batch in epoch), the state of
any stateful hook, and the run config, so a run resumes from its folder alone.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^iter_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint of the run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    """Write atomically (a kill mid-write leaves the previous checkpoint intact); prune to ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"iter_{iteration:07d}.pt"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    tmp.replace(path)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # Our own files carry numpy RNG state and config dicts, so the full unpickler is needed.
    return torch.load(path, map_location=map_location, weights_only=False)
