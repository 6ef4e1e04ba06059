"""Phase bookkeeping of a run folder: which phases are done, and what each one produced.

A phase that finishes writes ``phases/<phase>.json`` atomically (its result); rerunning the pipeline
skips phases that have that file. Work inside a phase resumes from the phase's own checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

PHASES: tuple[str, ...] = ("pretrain", "search", "derive", "finetune", "eval", "export", "measure")


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON so that a kill never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


class RunState:
    """The phases of one run folder (``runs/<name>/``)."""

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)
        self.marks = self.dir / "phases"

    def _mark(self, phase: str) -> Path:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
        return self.marks / f"{phase}.json"

    def phase_dir(self, phase: str) -> Path:
        """Working folder of a phase (checkpoints, metrics), created on demand."""
        self._mark(phase)
        path = self.dir / phase
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, phase: str) -> bool:
        return self._mark(phase).exists()

    def started(self, phase: str) -> bool:
        """Done, or begun: its working folder holds something (checkpoints, metrics, exported files).
        A phase that failed before writing anything (e.g. the farm refused it) has not started."""
        folder = self.dir / phase
        return self.done(phase) or (folder.is_dir() and any(folder.iterdir()))

    def restart_from(self, phase: str) -> None:
        """Forget ``phase`` and every later one and delete their working folders: they run again."""
        self.reset(phase)
        for p in PHASES[PHASES.index(phase):]:
            shutil.rmtree(self.dir / p, ignore_errors=True)

    def result(self, phase: str) -> dict:
        path = self._mark(phase)
        if not path.exists():
            raise FileNotFoundError(f"phase {phase!r} has not finished in {self.dir}; run it first")
        return json.loads(path.read_text())["result"]

    def mark_done(self, phase: str, result: dict, started: float | None = None) -> None:
        record = {"phase": phase, "finished_at": time.time(), "result": result}
        if started is not None:
            record["seconds"] = round(time.time() - started, 3)
        write_json_atomic(self._mark(phase), record)
        log.info("phase %s done", phase)

    def reset(self, phase: str) -> None:
        """Forget that ``phase`` and every later phase finished (their outputs are kept on disk)."""
        for p in PHASES[PHASES.index(phase):]:
            self._mark(p).unlink(missing_ok=True)

    def summary(self) -> dict[str, bool]:
        return {p: self.done(p) for p in PHASES}
