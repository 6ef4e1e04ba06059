"""Checks a run makes against the farm before any training, so a typo costs seconds, not a night.

What is checked depends on what the phases still to run need: a predictor for the device class and
runtime (search, derive, the server's prediction in measure), and an online device of that class
whose agent serves the runtime (the real measurements of derive and measure). The farm must answer
and accept the token. Each failure is one line saying what is wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import PHASES, RunState
from search_client.remote import ProfilerClient, RemoteError, ServiceUnavailable
from shared.api import BadRuntime, DeviceView, runtime_key
from shared.schemas import Runtime, RuntimeSettings


class PreflightError(RuntimeError):
    """The farm cannot serve this run; the message is one line saying what to fix."""


class FarmUnreachable(PreflightError):
    """No answer from the server at all (down, wrong URL, firewall)."""


@dataclass(frozen=True)
class FarmNeeds:
    predictor: bool  # a phase still to run reads the predictor
    device: bool  # a phase still to run measures on a device


def farm_needs(settings: PipelineSettings, state: RunState, until: str) -> FarmNeeds:
    remaining = {p for p in PHASES[: PHASES.index(until) + 1] if not state.done(p)}
    measuring = settings.measure and bool(remaining & {"derive", "measure"})
    return FarmNeeds(predictor=bool(remaining & {"search", "derive", "measure"}), device=measuring)


def preflight(settings: PipelineSettings, client: ProfilerClient, device_class: str, until: str) -> list[str]:
    """Raise :class:`PreflightError` (:class:`FarmUnreachable`) when the farm cannot serve the phases
    still to run; return what was checked, one line each."""
    needs = farm_needs(settings, RunState(settings.run_dir), until)
    if not (needs.predictor or needs.device):
        return []
    runtime = _runtime(settings.runtime)
    checked = [_reachable(client)]
    campaign = needs.predictor and settings.campaign_configs > 0
    devices = _devices(client, settings, needs) if settings.token or needs.device or campaign else None
    if settings.token:
        checked.append("token accepted")
    measures_campaign = False
    if needs.predictor:
        line, measures_campaign = _predictor(client, settings, device_class, runtime, devices)
        checked.append(line)
    if needs.device or measures_campaign:
        checked.append(_served(devices or [], device_class, runtime))
    return checked


def _runtime(text: str) -> str:
    try:
        return runtime_key(text)
    except BadRuntime as exc:
        raise PreflightError(f"--runtime {text!r} is not a runtime: use one of {', '.join(get_args(Runtime))}, "
                             "optionally with settings as in onnxruntime/t1/cpu") from exc


def _reachable(client: ProfilerClient) -> str:
    try:
        client.ping()
    except ServiceUnavailable as exc:
        raise FarmUnreachable(f"{exc}; start it or point --server (RTSEG_SERVER) at the farm") from exc
    except RemoteError as exc:
        raise PreflightError(f"profiler service at {client.server} is not ready: {exc}") from exc
    return f"server {client.server} reachable"


def _devices(client: ProfilerClient, settings: PipelineSettings, needs: FarmNeeds) -> list[DeviceView]:
    if not settings.token:
        raise PreflightError(f"no token: the run measures on {client.server}'s devices, which needs a team "
                             "token; pass --token or set RTSEG_TOKEN (or --no-measure to skip measuring)")
    try:
        return client.devices()
    except RemoteError as exc:
        if exc.status in (401, 403):
            raise PreflightError(f"token refused by {client.server} ({_detail(exc)}): pass a valid --token "
                                 "or RTSEG_TOKEN") from exc
        raise PreflightError(f"cannot list the farm's devices: {exc}") from exc


def _detail(exc: RemoteError) -> str:
    return str(exc).split(": ", 1)[-1]


def _predictor(client: ProfilerClient, settings: PipelineSettings, device_class: str, runtime: str,
               devices: list[DeviceView] | None) -> tuple[str, bool]:
    """What was found, and whether the run measures a campaign for want of a predictor."""
    rows = client.list_predictors()
    mine = [r for r in rows if r.device_class == device_class and r.runtime == runtime]
    if mine:
        return f"predictor v{max(r.version for r in mine)} for {device_class} / {runtime}", False
    if settings.campaign_configs > 0:
        return (f"no predictor for {device_class} / {runtime} yet: the run measures a campaign of "
                f"{settings.campaign_configs} configs and fits one"), True
    known = {r.device_class for r in rows} | {d.device_class for d in devices or []}
    if device_class not in known:
        raise PreflightError(f"device class {device_class!r} is unknown to {client.server} (no predictor, no "
                             f"device); known: {_listing(known)}; check --device-class")
    other = sorted(r.runtime for r in rows if r.device_class == device_class)
    there = f" (it has predictors for {_listing(other)})" if other else ""
    raise PreflightError(f"no predictor for {device_class} / {runtime} on {client.server}{there}: pass "
                         f"--campaign N to measure N block configs of the supernet there first (e.g. 1000), "
                         f"or fit one with 'rtseg-farm fit --device-class {device_class} --runtime {runtime}'")


def _served(devices: list[DeviceView], device_class: str, runtime: str) -> str:
    name = RuntimeSettings.parse(runtime).runtime
    of_class = [d for d in devices if d.device_class == device_class]
    if not of_class:
        classes = {d.device_class for d in devices}
        raise PreflightError(f"no agent serves device class {device_class!r}: attach a device of that class "
                             f"and run phone-agent (classes with devices: {_listing(classes)})")
    serving = [d for d in of_class if not d.runtimes or name in d.runtimes]
    if not serving:
        offered = sorted({r for d in of_class for r in d.runtimes})
        raise PreflightError(f"no agent of {device_class} runs {name} (they run {_listing(offered)}): pick "
                             f"--runtime {offered[0]}, or give phone-agent the {name} benchmark tool")
    online = [d for d in serving if d.online]
    if not online:
        raise PreflightError(f"every device of {device_class} that runs {name} is offline "
                             f"({_listing(d.serial for d in serving)}): is its phone-agent running?")
    return f"{len(online)} device(s) of {device_class} online for {name}"


def _listing(names: Iterable[str]) -> str:
    names = sorted(set(names))
    return ", ".join(names) if names else "none"
