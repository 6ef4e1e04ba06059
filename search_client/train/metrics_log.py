"""Run metrics: JSON lines (``metrics.jsonl``), TensorBoard when installed, tqdm on a terminal,
periodic log lines when headless. Only rank 0 writes."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder))


class MetricsLog:
    """Appends ``{"kind": "train"|"eval", "iter": int, ...}`` rows; resume truncates rows past the checkpoint."""

    def __init__(self, run_dir: Path, total: int, start: int, enabled: bool = True, progress: bool | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.total = total
        if enabled:
            self.truncate_after(start)
        self.tb = _tensorboard_writer(Path(run_dir) / "tb") if enabled else None
        show_bar = sys.stderr.isatty() if progress is None else progress
        self.bar = self._bar(start) if enabled and show_bar else None
        self.t0 = time.monotonic()

    def _bar(self, start: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.total, initial=start, dynamic_ncols=True, desc="train")

    def truncate_after(self, iteration: int) -> None:
        """Drop rows a killed run wrote after its last checkpoint; the resumed run writes them again."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("iter", 0) <= iteration]
        self.path.write_text("".join(r + "\n" for r in kept))

    def write(self, kind: str, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "iter": iteration, "time": round(time.monotonic() - self.t0, 3), **values}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{kind}/{key}", value, iteration)
        if self.bar is None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
            log.info("%s iter %d/%d %s", kind, iteration, self.total, shown)
        elif kind == "train":
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k in ("loss", "task", "lr")})

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == kind]
