"""What each dashboard page shows, gathered with the same functions (and token rules) as the API."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.orm import Session

from profiler_server import farm_status, listings
from profiler_server.auth import AuthError, Principal
from profiler_server.dashboard.heldout import held_out_points
from profiler_server.dashboard.plot import scatter
from profiler_server.predictor import store
from shared.api import CampaignFilter, CampaignView, JobFilter

PAGES = {"overview": "Overview", "devices": "Devices", "campaigns": "Campaigns", "predictors": "Predictors",
         "networks": "Networks measured"}  # fmt: skip
PEERS = ("linear_macs", "random_forest", "lookup_table")
ROWS = 100  # newest campaigns / networks on a page


def overview(session: Session, principal: Principal) -> dict[str, Any]:
    return {"status": farm_status.farm_status(session).model_dump()}


def devices(session: Session, principal: Principal) -> dict[str, Any]:
    return {"devices": [d.model_dump() for d in farm_status.device_views(session, principal)]}


def campaigns(session: Session, principal: Principal) -> dict[str, Any]:
    try:
        page = listings.list_campaigns(session, principal, CampaignFilter(limit=ROWS))
    except AuthError as exc:
        return {"refused": exc.message}
    rows = [{**c.model_dump(), "progress": _progress(c), "eta": _eta(c.eta_s)} for c in page.items]
    return {"campaigns": rows, "total": page.total, "can_cancel": principal.role in ("admin", "team")}


def _progress(c: CampaignView) -> float:
    """Share of the campaign's configs answered: measured or failed by its jobs, or from the cache."""
    total = c.jobs + c.cached
    return 1.0 if total == 0 else (c.done + c.failed + c.cached) / total


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def predictors(session: Session, principal: Principal) -> dict[str, Any]:
    """Versions per (device class, runtime), newest first, each with its metrics beside the peers';
    the plot of the newest ready version's held-out split."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for row in store.list_versions(session):
        groups[(row.device_class, row.runtime)].append(row)
    out = []
    for (device_class, runtime), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r.version, reverse=True)
        latest = next((r for r in rows if r.state == "ready"), None)
        points = held_out_points(session, latest) if latest is not None else None
        out.append({
            "device_class": device_class, "runtime": runtime,
            "versions": [_version(r) for r in rows],
            "plotted": latest.version if points else None,
            "statistic": points["statistic"] if points else None,
            "plot": scatter(points["measured_ms"], points["predicted_ms"]) if points else None,
        })  # fmt: skip
    return {"groups": out, "peers": PEERS}


def _version(row: Any) -> dict[str, Any]:
    m = row.metrics or {}
    peers = m.get("peers") or {}
    return {
        "version": row.version, "state": row.state, "created_at": row.created_at, "error": row.error,
        "statistic": m.get("statistic"), "n_train": row.n_train, "n_test": row.n_test,
        "mape": m.get("mape"), "within_10": m.get("within_10"),
        "noise": (m.get("noise_floor") or {}).get("median_pct"),
        "peers": {name: (peers.get(name) or {}).get("mape") for name in PEERS},
    }  # fmt: skip


def networks(session: Session, principal: Principal) -> dict[str, Any]:
    try:
        page = listings.list_jobs(session, principal, JobFilter(kind="network", limit=ROWS))
    except AuthError as exc:
        return {"refused": exc.message}
    rows = []
    for job in page.items:
        measured = job.measurement.median_ms if job.measurement else None
        predicted = job.predicted_ms
        error = None if measured is None or predicted is None else (predicted - measured) / measured
        rows.append({**job.model_dump(), "measured_ms": measured, "error": error})
    return {"networks": rows, "total": page.total}


BUILDERS = {"overview": overview, "devices": devices, "campaigns": campaigns, "predictors": predictors,
            "networks": networks}  # fmt: skip
