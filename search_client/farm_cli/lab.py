"""Lab control commands of ``rtseg-farm``: see the farm and steer it.

    rtseg-farm status                          devices online, queue, throughput, failures
    rtseg-farm devices                         each device: class, online, temperature, current job
    rtseg-farm campaigns [--state S] [--limit N]
    rtseg-farm cancel CAMPAIGN_ID              queued jobs leave the queue, running ones finish
    rtseg-farm fit --device-class C [--runtime R] [--wait]
    rtseg-farm tokens [list | revoke ID]

Each prints an aligned table, or one JSON document with ``--json`` (before or after the command).
"""

from __future__ import annotations

import argparse

from search_client.farm_cli import UsageError
from search_client.farm_cli.output import render_fields, render_table, to_json
from search_client.remote import ProfilerClient
from shared.api import (
    CAMPAIGN_STATES,
    BasePredictor,
    CampaignView,
    DeviceView,
    OtherTeamJob,
    PredictorView,
    TokenView,
    runtime_key,
)


def _json_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: without the flag here, the value given before the command stays.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON document instead of a table")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="devices online, queue depth, jobs per minute, failures")
    p.set_defaults(func=cmd_status)
    _json_flag(p)

    p = sub.add_parser("devices", help="every device: class, online, temperature, current job")
    p.set_defaults(func=cmd_devices)
    _json_flag(p)

    p = sub.add_parser("campaigns", help="campaigns with progress and state (a team sees its own)")
    p.add_argument("--state", choices=CAMPAIGN_STATES, help="only campaigns in this state")
    p.add_argument("--device-class", help="only campaigns for this device class")
    p.add_argument("--limit", type=_positive, default=50, help="at most this many, newest first (default 50)")
    p.set_defaults(func=cmd_campaigns)
    _json_flag(p)

    p = sub.add_parser("cancel", help="cancel a campaign: queued jobs leave the queue, running ones finish")
    p.add_argument("campaign_id", type=_positive, metavar="CAMPAIGN_ID")
    p.set_defaults(func=cmd_cancel)
    _json_flag(p)

    p = sub.add_parser("fit", help="fit a new predictor version for a device class and runtime")
    p.add_argument("--device-class", required=True, help="e.g. SM-G991B/lahaina or host/<cpu>")
    p.add_argument("--runtime", default="onnxruntime", help="runtime or runtime key (default onnxruntime)")
    p.add_argument("--wait", action="store_true", help="wait until the fit is ready and print its metrics")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits at most (default 900)")
    p.add_argument("--base", metavar="DEVICE_CLASS", help="adapt the predictor of this device class (measured "
                                                           "at length) instead of training from scratch")
    p.add_argument("--base-runtime", help="the base's runtime (default: --runtime)")
    p.add_argument("--base-version", type=_positive, help="the base's version (default: its latest ready one)")
    p.set_defaults(func=cmd_fit)
    _json_flag(p)

    p = sub.add_parser("tokens", help="list tokens (never their secrets) or revoke one")
    p.add_argument("action", nargs="?", choices=["list", "revoke"], default="list")
    p.add_argument("token_id", nargs="?", type=_positive, metavar="ID", help="token id to revoke")
    p.set_defaults(func=cmd_tokens)
    _json_flag(p)


def _emit(args: argparse.Namespace, data: object, text: str) -> int:
    print(to_json(data) if args.json else text)
    return 0


# --- status and devices -------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, client: ProfilerClient) -> int:
    s = client.status()
    text = render_fields([
        ("server", client.server), ("devices online", s.devices_online), ("queue depth", s.queue_depth),
        ("running", s.running), ("jobs per minute", s.jobs_per_minute),
        ("failures (last hour)", s.failures_last_hour), ("predictors", s.predictors),
    ])
    return _emit(args, s, text)


def device_rows(devices: list[DeviceView]) -> list[list[object]]:
    return [[d.serial, d.device_class, d.kind, d.online, d.runtimes, d.temperature_c,
             _job_label(d), d.measured_today, d.last_seen] for d in devices]


def _job_label(d: DeviceView) -> str | None:
    job = d.current_job
    if job is None:
        return None
    if isinstance(job, OtherTeamJob):
        return f"{job.id} ({job.detail})"
    owner = f"campaign {job.campaign_id}" if job.campaign_id else job.name
    return f"{job.id} ({owner})" if owner else str(job.id)


def cmd_devices(args: argparse.Namespace, client: ProfilerClient) -> int:
    devices = [d if _has_detail(d) else client.device(d.serial) for d in client.devices()]
    headers = ["SERIAL", "CLASS", "KIND", "ONLINE", "RUNTIMES", "TEMP C", "CURRENT JOB", "TODAY", "LAST SEEN"]
    text = render_table(headers, device_rows(devices)) if devices else "no devices registered"
    return _emit(args, devices, text)


def _has_detail(device: DeviceView) -> bool:
    """The listing already carries temperature and current job (else: one detail request per device)."""
    return {"temperature_c", "current_job"} <= device.model_fields_set


# --- campaigns ----------------------------------------------------------------------------------


def progress_bar(campaign: CampaignView, width: int = 10) -> str:
    """``[####------] 40% 4/10``: finished (done + failed) jobs of all jobs."""
    filled = round(campaign.progress * width)
    finished = campaign.done + campaign.failed
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * campaign.progress:.0f}% {finished}/{campaign.jobs}"


def _eta(campaign: CampaignView) -> str | None:
    if campaign.eta_s is None or campaign.state in ("done", "failed", "cancelled"):
        return None
    minutes, seconds = divmod(int(campaign.eta_s), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


def campaign_rows(campaigns: list[CampaignView]) -> list[list[object]]:
    return [[c.id, c.team, c.state, c.device_class, c.runtime, progress_bar(c), c.failed, _eta(c), c.created_at]
            for c in campaigns]


def cmd_campaigns(args: argparse.Namespace, client: ProfilerClient) -> int:
    page = client.campaigns(state=args.state, device_class=args.device_class, limit=args.limit)
    headers = ["ID", "TEAM", "STATE", "CLASS", "RUNTIME", "PROGRESS", "FAILED", "ETA", "CREATED"]
    if page.items:
        more = f"\n{len(page.items)} of {page.total} shown (--limit)" if page.total > len(page.items) else ""
        text = render_table(headers, campaign_rows(page.items)) + more
    else:
        text = "no campaigns" + (f" in state {args.state}" if args.state else "")
    return _emit(args, page, text)


def cmd_cancel(args: argparse.Namespace, client: ProfilerClient) -> int:
    c = client.cancel_campaign(args.campaign_id)
    running = f", {c.running} running will finish" if c.running else ""
    text = f"campaign {c.id} ({c.device_class} {c.runtime}) {c.state}: {c.done} done, {c.failed} failed{running}"
    return _emit(args, c, text)


# --- predictors ---------------------------------------------------------------------------------


def _metrics_line(row: PredictorView) -> str:
    m = row.metrics
    parts = [f"{name} {m[key]:.3g}" for key, name in (("mape", "MAPE"), ("within_10", "within 10 %"))
             if isinstance(m.get(key), int | float)]
    if row.n_train is not None:
        parts.append(f"{row.n_train} train / {row.n_test} test configs")
    if row.adapted_from is not None:
        base = row.adapted_from
        parts.append(f"adapted from {base.device_class} {base.runtime} v{base.version} (predictor {base.id}"
                     + (f", MAPE {m['base_mape']:.3g} before adapting)" if isinstance(m.get("base_mape"), float) else ")"))
    return ", ".join(parts)


def _base(args: argparse.Namespace, runtime: str) -> BasePredictor | None:
    if args.base is None:
        if args.base_runtime is not None or args.base_version is not None:
            raise UsageError("--base-runtime and --base-version need --base DEVICE_CLASS")
        return None
    try:
        return BasePredictor(device_class=args.base, runtime=runtime_key(args.base_runtime or runtime),
                             version=args.base_version)
    except ValueError as exc:
        raise UsageError(f"--base: {exc}") from exc


def cmd_fit(args: argparse.Namespace, client: ProfilerClient) -> int:
    try:
        runtime = runtime_key(args.runtime)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    started = client.fit_predictor(args.device_class, runtime, _base(args, runtime))
    row = client.predictor(started.id)
    if args.wait:
        row = client.wait_fit(row.id, timeout=args.timeout)
        text = f"predictor {row.id}: {row.device_class} {row.runtime} v{row.version} ready; {_metrics_line(row)}"
    else:
        text = (f"predictor {row.id}: {row.device_class} {row.runtime} v{row.version} {row.state}; "
                f"follow it with 'rtseg-farm fit ... --wait' or GET /v1/predictors/{row.id}")
    return _emit(args, row, text)


# --- tokens -------------------------------------------------------------------------------------


def token_rows(tokens: list[TokenView]) -> list[list[object]]:
    return [[t.id, t.role, t.team, t.name, t.created_at, t.last_used_at, t.revoked_at] for t in tokens]


def cmd_tokens(args: argparse.Namespace, client: ProfilerClient) -> int:
    if args.action == "revoke":
        if args.token_id is None:
            raise UsageError("tokens revoke needs the token's ID (see 'rtseg-farm tokens')")
        t = client.revoke_token(args.token_id)
        owner = f"team {t.team}" if t.team is not None else t.role
        return _emit(args, t, f"token {t.id} ({owner}, {t.name or 'unnamed'}) revoked at {t.revoked_at}")
    if args.token_id is not None:
        raise UsageError(f"'tokens list' takes no ID (to revoke: rtseg-farm tokens revoke {args.token_id})")
    tokens = client.tokens()
    headers = ["ID", "ROLE", "TEAM", "NAME", "CREATED", "LAST USED", "REVOKED"]
    return _emit(args, tokens, render_table(headers, token_rows(tokens)) if tokens else "no tokens")
