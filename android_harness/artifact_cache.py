"""On-disk cache of downloaded model artifacts, keyed and verified by sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from android_harness.errors import HarnessError

log = logging.getLogger(__name__)


class ArtifactMismatch(HarnessError):
    """Downloaded bytes do not hash to the sha256 the server promised."""


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, fmt: str) -> Path:
        return self.root / f"{sha256}.{fmt}"

    def get(self, sha256: str, fmt: str, fetch: Callable[[], bytes]) -> Path:
        """The verified local file; downloads with ``fetch`` when missing or corrupt."""
        path = self.path_for(sha256, fmt)
        if path.is_file() and sha256_file(path) == sha256:
            return path
        data = fetch()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ArtifactMismatch(f"artifact {sha256[:12]}… downloaded with sha256 {actual[:12]}… "
                                   f"({len(data)} bytes); refusing to measure it")
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: concurrent workers never see half a file
        log.debug("cached artifact %s (%d bytes)", path.name, len(data))
        return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
