"""Every benchmark starts the way the README runs it, ``.venv/bin/python bench/<name>.py`` from the
repository root: bench/ is not a package, so a bench that imported ``bench.<sibling>`` stopped at
once with ModuleNotFoundError (only ``--help`` here; the benches themselves run for minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_bench_starts_as_the_readme_runs_it(script: Path):
    run = subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0 and "usage:" in run.stdout, run.stderr[-2000:]
