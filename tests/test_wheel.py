"""The installed packages carry the product only: the built wheel holds the four packages and their
package data, and none of the test tooling (testkit/, tests/, bench/); the Docker image copies the
same four packages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "profiler_server", "android_harness", "search_client")
TOOLING = ("testkit", "tests", "bench")
# Names only test tooling has (the adb emulator, its shell, the benchmark-tool stand-ins).
TOOLING_NAMES = re.compile(r"emulator|standins?|live_server|live_farm|free_port")
LEFT_OUT = shutil.ignore_patterns(".git", ".venv*", "runs", "var", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", ".ruff_cache", ".hypothesis")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Build the wheel from a copy of the checkout (a build writes build/ and *.egg-info beside
    its sources) without network: the build backend of this environment, no isolation."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp / "out"), str(source)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp / "out").glob("rtseg_farm-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_holds_the_four_packages(wheel_names: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == set(PACKAGES)
    for module in ("android_harness/agent.py", "profiler_server/app.py", "search_client/cli.py", "shared/blocks.py",
                   "profiler_server/db/migrations/versions/0001_initial_schema.py"):
        assert module in wheel_names


def test_wheel_carries_no_test_tooling(wheel_names: list[str]) -> None:
    tooling = [n for n in wheel_names if n.split("/")[0] in TOOLING or TOOLING_NAMES.search(n.split("/")[-1])]
    assert not tooling, f"test tooling in the wheel: {tooling}"


def test_docker_image_copies_only_the_packages() -> None:
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip().upper().startswith("COPY "):
            *sources, _dest = [w for w in line.split()[1:] if not w.startswith("--")]
            copied += [s.rstrip("/") for s in sources]
    assert "." not in copied and not set(copied) & set(TOOLING), copied
    assert set(PACKAGES) <= set(copied)
