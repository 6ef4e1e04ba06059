"""Measurement queries and exports (JSON rows, CSV and Parquet through pandas)."""

from __future__ import annotations

import io
import json

import pandas as pd
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from profiler_server.auth import Principal
from profiler_server.db import Campaign, CampaignItem, Measurement
from profiler_server.errors import NotFound
from profiler_server.tenancy import visible_measurements
from shared.api import MeasurementFilter, MeasurementRow, runtime_key

COLUMNS = (
    "id", "job_id", "artifact_sha256", "kind", "device_class", "runtime", "serial", "median_ms", "mean_ms",
    "p10_ms", "p90_ms", "std_ms", "runs", "warmup", "temp_before_c", "temp_after_c", "tool", "tool_version",
    "unstable", "created_at",
)  # fmt: skip


def build_query(session: Session, f: MeasurementFilter, principal: Principal) -> Select:
    query = select(Measurement).where(visible_measurements(principal))
    if f.campaign_id is not None:
        campaign = session.get(Campaign, f.campaign_id)
        if campaign is None:
            raise NotFound(f"campaign {f.campaign_id} does not exist")
        # A campaign's measurements include the cached ones other campaigns made for its configs.
        items = select(CampaignItem.artifact_sha256).where(CampaignItem.campaign_id == f.campaign_id)
        query = query.where(
            Measurement.artifact_sha256.in_(items),
            Measurement.device_class == campaign.device_class,
            Measurement.runtime == campaign.runtime,
        )
    if f.device_class is not None:
        query = query.where(Measurement.device_class == f.device_class)
    if f.runtime is not None:
        query = query.where(Measurement.runtime == runtime_key(f.runtime))
    if f.kind is not None:
        query = query.where(Measurement.kind == f.kind)
    return query.order_by(Measurement.id).limit(f.limit).offset(f.offset)


def measurement_row(m: Measurement, samples: bool = True) -> MeasurementRow:
    """The row as ``GET /v1/measurements`` answers it; ``samples_ms`` is left unset (and out of
    the answer) unless asked for."""
    fields = {c: getattr(m, c) for c in COLUMNS} | {"config": m.config, "flags": m.flags}
    if samples:
        fields["samples_ms"] = m.samples
    return MeasurementRow(**fields)


def list_measurements(
    session: Session, f: MeasurementFilter, principal: Principal, samples: bool | None = None
) -> list[MeasurementRow]:
    """The rows ``principal`` may see (``tenancy.visible_measurements``) that match ``f``."""
    keep = f.samples if samples is None else samples
    return [measurement_row(m, keep) for m in session.scalars(build_query(session, f, principal))]


def to_frame(measurements: list[MeasurementRow]) -> pd.DataFrame:
    """One row per measurement; ``config`` and ``samples_ms`` as JSON text, config fields as
    ``cfg_<field>`` columns for quick analysis."""
    rows = [m.model_dump() for m in measurements]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "config", "flags", "samples_ms"])
    configs = pd.DataFrame([r["config"] or {} for r in rows], index=frame.index).add_prefix("cfg_")
    for col in ("config", "flags", "samples_ms"):
        frame[col] = [json.dumps(v) for v in frame[col]]
    return pd.concat([frame, configs], axis=1)


def to_csv(rows: list[MeasurementRow]) -> bytes:
    return to_frame(rows).to_csv(index=False).encode()


def to_parquet(rows: list[MeasurementRow]) -> bytes:
    buf = io.BytesIO()
    to_frame(rows).to_parquet(buf, index=False)
    return buf.getvalue()
