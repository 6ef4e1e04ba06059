"""Database access for predictors: training data from measurements, every fitted version kept."""

from __future__ import annotations

import json

from sqlalchemy import Integer, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from profiler_server.db import Measurement, NetworkBlocks, PredictorVersion
from shared.api import PredictorDetail, PredictorView
from shared.config import is_current_definition


def training_rows(
    session: Session, device_class: str, runtime: str, statistic: str = "median_ms"
) -> tuple[list[dict], list[float]]:
    """Block configs and one latency statistic (``median_ms``, ``p10_ms``, ``mean_ms``) of every
    stored block measurement (repeats included) of a block's current definition: a measurement
    of an older form of a block (see ``shared.config``) never trains or judges a predictor.
    Whole-network measurements have no config (SQL NULL; rows stored before migration
    0003_lease_owner held the JSON ``null``, dropped here too)."""
    rows = session.execute(
        select(Measurement.config, getattr(Measurement, statistic))
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.config.is_not(None), Measurement.unstable.is_(False))
        .where(Measurement.kind != "kernel")  # kernels have their own predictor (profiler_server.predictor.kernel_predictor)
        .order_by(Measurement.id)
    ).all()
    rows = [r for r in rows if r[0] is not None and is_current_definition(r[0])]
    return [r[0] for r in rows], [float(r[1]) for r in rows]


def network_rows(
    session: Session, device_class: str, runtime: str, statistic: str = "p10_ms"
) -> tuple[list[list[dict]], list[float]]:
    """Block lists and the lowest ``statistic`` of every measured network that came with its block
    list (uploads with ``blocks``), one row per network: the training data of the network-level
    correction. Like block configs, a network measured in several jobs takes its least disturbed
    figure; a stable measurement order (by network hash) keeps a refit reproducible."""
    lowest = session.execute(
        select(Measurement.artifact_sha256, func.min(getattr(Measurement, statistic)))
        .join(NetworkBlocks, Measurement.artifact_sha256 == NetworkBlocks.artifact_sha256)
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.kind == "network", Measurement.unstable.is_(False))
        .group_by(Measurement.artifact_sha256)
        .order_by(Measurement.artifact_sha256)
    ).all()
    blocks = dict(session.execute(select(NetworkBlocks.artifact_sha256, NetworkBlocks.blocks)
                                  .where(NetworkBlocks.artifact_sha256.in_([r[0] for r in lowest]))).all())
    rows = [(blocks[sha], ms) for sha, ms in lowest if all(is_current_definition(b) for b in blocks[sha])]
    return [list(b) for b, _ in rows], [float(ms) for _, ms in rows]


def count_networks(session: Session, device_class: str, runtime: str) -> int:
    """How many networks ``network_rows`` would return (one cheap query: is a refit due?)."""
    return session.scalar(
        select(func.count(func.distinct(NetworkBlocks.artifact_sha256)))
        .join(Measurement, Measurement.artifact_sha256 == NetworkBlocks.artifact_sha256)
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.kind == "network", Measurement.unstable.is_(False))
    ) or 0


def count_unstable_networks(session: Session, device_class: str, runtime: str) -> int:
    """Networks with block lists whose every measurement was flagged unstable (left out, like
    unstable block measurements: a whole network measured on a busy device is disturbed most)."""
    rows = session.execute(
        select(NetworkBlocks.artifact_sha256, func.max(Measurement.unstable.cast(Integer)))
        .join(Measurement, Measurement.artifact_sha256 == NetworkBlocks.artifact_sha256)
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.kind == "network")
        .group_by(NetworkBlocks.artifact_sha256)
        .having(func.min(Measurement.unstable.cast(Integer)) == 1)
    ).all()
    return len(rows)


def measured_kinds(session: Session, device_class: str, runtime: str) -> set[str]:
    """The block kinds measured on (device class, runtime) (what a predictor fitted there covers)."""
    return set(session.scalars(
        select(Measurement.kind).distinct()
        .where(Measurement.device_class == device_class, Measurement.runtime == runtime)
        .where(Measurement.config.is_not(None), Measurement.kind.not_in(("kernel", "network")))
    ))


def count_distinct_configs(session: Session, device_class: str, runtime: str) -> int:
    configs, _ = training_rows(session, device_class, runtime)
    return len({json.dumps(c, sort_keys=True) for c in configs})


def running_fits(session: Session, team_id: int) -> int:
    """Fits that ``team_id`` asked for that are still queued or fitting."""
    return session.scalar(
        select(func.count()).where(PredictorVersion.team_id == team_id, PredictorVersion.state == "fitting")
    )


def new_version(
    session: Session, device_class: str, runtime: str, team_id: int | None = None
) -> PredictorVersion:
    """Insert a ``fitting`` row with the next version number of this (device class, runtime),
    asked for by ``team_id`` (None: an automatic refit).

    On PostgreSQL two concurrent fits can read the same maximum; the unique (device class, runtime,
    version) constraint refuses the second insert, which then retries with the next number (each
    refusal means another fit took a number, so n racing fits need at most n - 1 retries)."""
    tries = 32
    for attempt in range(tries):
        last = session.scalar(
            select(func.max(PredictorVersion.version)).where(
                PredictorVersion.device_class == device_class, PredictorVersion.runtime == runtime
            )
        )
        row = PredictorVersion(
            device_class=device_class, runtime=runtime, version=(last or 0) + 1, state="fitting", team_id=team_id
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            if attempt == tries - 1:
                raise
            continue
        return row
    raise AssertionError("unreachable")


def latest_ready(session: Session, device_class: str, runtime: str) -> PredictorVersion | None:
    return session.scalars(
        select(PredictorVersion)
        .where(PredictorVersion.device_class == device_class, PredictorVersion.runtime == runtime)
        .where(PredictorVersion.state == "ready")
        .order_by(PredictorVersion.version.desc())
        .limit(1)
    ).first()


def pinned(session: Session, device_class: str, runtime: str, version: int) -> PredictorVersion | None:
    return session.scalars(
        select(PredictorVersion).where(
            PredictorVersion.device_class == device_class,
            PredictorVersion.runtime == runtime,
            PredictorVersion.version == version,
        )
    ).first()


def served_pairs(session: Session) -> dict[str, list[str]]:
    """``{device_class: [runtime, ...]}`` that have at least one ready predictor."""
    rows = session.execute(
        select(PredictorVersion.device_class, PredictorVersion.runtime)
        .where(PredictorVersion.state == "ready")
        .distinct()
    ).all()
    out: dict[str, list[str]] = {}
    for device_class, runtime in sorted(rows):
        out.setdefault(device_class, []).append(runtime)
    return out


def list_versions(session: Session, device_class: str | None = None, runtime: str | None = None) -> list:
    query = select(PredictorVersion).order_by(PredictorVersion.device_class, PredictorVersion.runtime,
                                              PredictorVersion.version)
    if device_class is not None:
        query = query.where(PredictorVersion.device_class == device_class)
    if runtime is not None:
        query = query.where(PredictorVersion.runtime == runtime)
    return list(session.scalars(query))


def version_view(row: PredictorVersion) -> PredictorView:
    """One predictor version as every predictor route answers it (no weights)."""
    return PredictorView(
        id=row.id,
        device_class=row.device_class,
        runtime=row.runtime,
        version=row.version,
        created_at=row.created_at,
        state=row.state,
        error=row.error,
        n_train=row.n_train,
        n_test=row.n_test,
        blob_sha256=row.blob_sha256,
        metrics=row.metrics or {},
        beaten_by=(row.metrics or {}).get("beaten_by", []),
        adapted_from=(row.metrics or {}).get("adapted_from"),
    )


def version_detail(row: PredictorVersion) -> PredictorDetail:
    """The version with the feature ranges it was trained on."""
    return PredictorDetail(**version_view(row).model_dump(), feature_ranges=row.feature_ranges or {})
