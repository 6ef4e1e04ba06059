"""The product's docs and docstrings cite nothing a user does not have.

The design notes, reference notes, style notes and the paper's text that the project was built from
are not shipped; product code, README, benches and scripts must say what they mean in place.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("android_harness", "profiler_server", "search_client", "shared", "bench", "scripts", "testkit", "docs")
TOP_FILES = ("README.md", "Makefile", "Dockerfile", "docker-compose.yml", "pyproject.toml")
SUFFIXES = {".py", ".md", ".txt", ".toml", ".yml", ".yaml", ".sh", ".cfg", ".ini", ".html", ".js", ""}
# Spelled in pieces so that a search of the repository for these names finds only real citations.
UNSHIPPED = re.compile("|".join([r"DESIGN\.md", r"REFERENCE\.md", r"STYLE\.md", r"shared/" + "paper",
                                 r"paper/" + r"000_\w+\.txt"]))
SKIP_DIRS = {"__pycache__", ".venv", "node_modules", ".git", "runs"}


def product_files(root: Path = ROOT) -> list[Path]:
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for top in PRODUCT:
        for path in (root / top).rglob("*"):
            if path.is_file() and path.suffix in SUFFIXES and not SKIP_DIRS & set(path.relative_to(root).parts):
                files.append(path)
    return files


def citations(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line: text`` of every line naming an unshipped file."""
    found = []
    for path in paths:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if UNSHIPPED.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_product_code_and_readme_cite_no_unshipped_file():
    files = product_files()
    assert any(p.name == "README.md" for p in files) and len(files) > 50
    assert citations(files) == [], "say what is meant in place of the citation"


def test_the_check_finds_a_citation(tmp_path: Path):
    (tmp_path / "search_client").mkdir()
    (tmp_path / "search_client" / "m.py").write_text('"""Numbers as in ' + "REFERENCE" + '.md."""\n')
    (tmp_path / "README.md").write_text("See shared/" + "paper for the method.\nFine line.\n")
    assert citations(product_files(tmp_path), tmp_path) == [
        "README.md:1: See shared/" + "paper for the method.",
        "search_client/m.py:1: " + '"""Numbers as in ' + "REFERENCE" + '.md."""',
    ]
