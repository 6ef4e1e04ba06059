"""The installed version of the project, as every console script reports it with ``--version``."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "rtseg-farm"


def package_version() -> str:
    """Version of the installed ``rtseg-farm`` distribution ("unknown" when run from a bare tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``<prog> <version>`` and exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
