"""Every benchmark starts the way the README runs it, ``.venv/bin/python bench/<name>.py`` from the
repository root: bench/ is not a package, so a bench that imported ``bench.<sibling>`` stopped with
ModuleNotFoundError, at once or (an import inside a function) minutes into its run. Only ``--help``
runs here; the benches themselves take minutes."""

from __future__ import annotations

import re
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


def test_no_bench_imports_a_sibling_as_bench_dot_name():
    offenders = [f"{p.name}:{n}" for p in sorted((ROOT / "bench").glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.match(r"\s*(from|import) bench\.", line)]  # fmt: skip
    assert not offenders, f"import siblings by their module name (sys.path has bench/): {offenders}"
