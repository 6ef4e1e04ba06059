"""A run on a device class that has no predictor yet: measure the supernet's blocks there first.

With ``--campaign N``, a run whose device class and runtime have no predictor queues a campaign of
N block configs of its supernet's space before pretraining (the devices measure while the supernet
trains), keeps its id in ``runs/<name>/campaign.json``, and the search waits for it and for the
predictor fitted on it. A rerun finds the campaign in that file and does not queue it again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from search_client.pipeline.context import PipelineContext, Say
from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import write_json_atomic
from search_client.remote import ProfilerClient, RemoteError
from shared.api import CampaignView, PredictorView, runtime_key

log = logging.getLogger(__name__)
WAIT_S = 48 * 3600.0  # an overnight campaign on a few phones; beyond that the run stops and says so


def campaign_file(settings: PipelineSettings) -> Path:
    return settings.run_dir / "campaign.json"


def needs_campaign(settings: PipelineSettings, client: ProfilerClient, device_class: str) -> bool:
    """Asked for one, and no predictor exists for the run's device class and runtime."""
    return settings.campaign_configs > 0 and not client.list_predictors(device_class, runtime_key(settings.runtime))


def start_campaign(settings: PipelineSettings, client: ProfilerClient, device_class: str, say: Say) -> dict:
    """Queue the campaign (once per run folder); returns what ``campaign.json`` records."""
    path = campaign_file(settings)
    if path.exists():
        record = json.loads(path.read_text())
        say(f"[campaign] {record['id']} queued earlier: {device_class} measures while the supernet trains")
        return record
    from search_client.models import build_from_config
    from search_client.pipeline.space import supernet_space

    space = supernet_space(build_from_config(settings.run_config()), [(settings.latency_height, settings.latency_width)])
    camp = client.create_campaign(device_class=device_class, runtime=settings.runtime, space=space.model_dump(),
                                  n=settings.campaign_configs, seed=0, wait_s=5)
    record = {"id": camp.id, "device_class": device_class, "runtime": settings.runtime,
              "n": settings.campaign_configs}
    write_json_atomic(path, record)
    say(f"[campaign] {camp.id}: {camp.n} block configs of the supernet queued on {device_class}; "
        "they are measured while the supernet trains")
    return record


def await_campaign_predictor(ctx: PipelineContext) -> None:
    """Before the search: when this run queued a campaign and no predictor exists yet, wait for the
    campaign to finish and for a predictor fitted on it."""
    path = campaign_file(ctx.settings)
    client, runtime = ctx.require_client(), runtime_key(ctx.settings.runtime)
    if not path.exists() or client.list_predictors(ctx.device_class, runtime):
        return
    record = json.loads(path.read_text())
    last = [0.0]

    def progress(camp: CampaignView) -> None:
        if time.monotonic() - last[0] >= 60:
            last[0] = time.monotonic()
            ctx.say(f"[search] waiting for campaign {camp.id}: {camp.done} measured, "
                    f"{camp.queued + camp.running} to go")

    camp = client.wait_campaign(int(record["id"]), timeout=WAIT_S, poll=10, progress=progress)
    ctx.say(f"[search] campaign {camp.id} {camp.state}: {camp.counts}; "
            f"fitting the predictor for {ctx.device_class} / {runtime}")
    info = fit_after_campaign(client, ctx.device_class, runtime, newer_than=0)
    ctx.say(f"[search] predictor v{info.version} ready")


def fit_after_campaign(client: ProfilerClient, device_class: str, runtime: str, newer_than: int,
                       hook_wait_s: float = 60.0) -> PredictorView:
    """The server refits by itself when a campaign completes; ask for a fit only if it does not."""
    try:
        return client.wait_predictor(device_class, runtime, newer_than=newer_than, timeout=hook_wait_s, poll=0.5)
    except RemoteError:
        client.fit_predictor(device_class, runtime)
        return client.wait_predictor(device_class, runtime, newer_than=newer_than, timeout=900, poll=0.5)
