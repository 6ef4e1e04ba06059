"""Artifact store: model files under ``<data>/artifacts/<sha[:2]>/<sha>``, one row per file.

Files are written to a temporary name and renamed, so a reader never sees half a file and a crash
never leaves a corrupt artifact under its final name.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import onnx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from profiler_server.db import Artifact, Database
from profiler_server.errors import BadRequest, NotFound
from profiler_server.export_worker import export_in_worker
from shared.config import AnyBlock
from shared.export import sha256_bytes

log = logging.getLogger(__name__)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def artifact_path(root: Path, sha256: str) -> Path:
    if not SHA256_RE.match(sha256):
        raise NotFound(f"{sha256!r} is not a sha256 (64 lower-case hex digits)")
    return root / sha256[:2] / sha256


def write_file(root: Path, data: bytes) -> str:
    """Store ``data`` by content hash (idempotent); returns the sha256."""
    sha = sha256_bytes(data)
    path = artifact_path(root, sha)
    if path.exists() and path.stat().st_size == len(data):
        return sha
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha


def config_key(cfg: AnyBlock, fmt: str) -> str:
    return f"{cfg.key()}:{fmt}"


def find_block_artifact(session: Session, cfg: AnyBlock, fmt: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.config_key == config_key(cfg, fmt)).limit(1))


def register(db: Database, row: Artifact) -> Artifact:
    """Insert an artifact row unless one with the same sha256 exists (then return that one)."""
    try:
        with db.transaction() as session:
            existing = session.get(Artifact, row.sha256)
            if existing is not None:
                return existing
            session.add(row)
        return row
    except IntegrityError:  # another thread registered the same bytes a moment ago
        with db.sessionmaker() as session:
            return session.get(Artifact, row.sha256)


def export_block_artifact(db: Database, root: Path, cfg: AnyBlock, fmt: str) -> Artifact:
    """The artifact of one block config: from the store when known, else exported now.

    Runs in a worker thread: the export (tens of ms per block) holds no database session.
    """
    with db.sessionmaker() as session:
        known = find_block_artifact(session, cfg, fmt)
    if known is not None and artifact_path(root, known.sha256).exists():
        return known
    data = export_in_worker(cfg, fmt)
    sha = write_file(root, data)
    row = Artifact(
        sha256=sha,
        format=fmt,
        size=len(data),
        kind=cfg.kind,
        config=cfg.model_dump(mode="json"),
        config_key=config_key(cfg, fmt),
    )
    return register(db, row)


def check_onnx(data: bytes) -> None:
    """400 unless ``data`` is a well-formed ONNX model."""
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for bad bytes
        raise BadRequest(f"not a valid ONNX model: {type(exc).__name__}: {str(exc)[:500]}") from exc


def is_tflite(data: bytes) -> bool:
    """A TFLite flatbuffer carries the file identifier ``TFL3`` at bytes 4-7."""
    return len(data) >= 8 and data[4:8] == b"TFL3"


def check_model_format(data: bytes, fmt: str) -> None:
    """400 unless ``data`` is a model of format ``fmt`` (``onnx`` or ``tflite``), naming the fix."""
    if fmt == "tflite":
        if is_tflite(data):
            return
        kind = "an ONNX model" if _parses_as_onnx(data) else "not a TFLite model (no TFL3 identifier)"
        raise BadRequest(f"this file is {kind}; runtime 'tflite' measures .tflite files: convert it to "
                         "TFLite, or send runtime=onnxruntime for an ONNX file")  # fmt: skip
    if is_tflite(data):
        raise BadRequest("this file is a TFLite model; runtime 'onnxruntime' measures ONNX files: "
                         "send runtime=tflite for a .tflite file")  # fmt: skip
    check_onnx(data)


def _parses_as_onnx(data: bytes) -> bool:
    try:
        check_onnx(data)
    except BadRequest:
        return False
    return True


def store_network(db: Database, root: Path, data: bytes, name: str, fmt: str = "onnx") -> Artifact:
    """Check that ``data`` is a model of format ``fmt`` and store it (kind ``network``)."""
    check_model_format(data, fmt)
    sha = write_file(root, data)
    row = Artifact(sha256=sha, format=fmt, size=len(data), kind="network", config=None, name=name)
    return register(db, row)


def open_artifact(session: Session, root: Path, sha256: str) -> tuple[Artifact, Path]:
    row = session.get(Artifact, sha256) if SHA256_RE.match(sha256) else None
    if row is None:
        raise NotFound(f"no artifact {sha256!r}")
    path = artifact_path(root, sha256)
    if not path.exists():
        raise NotFound(f"artifact {sha256} is registered but its file is missing from the store")
    return row, path
