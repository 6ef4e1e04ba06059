"""The agent's side of the HTTP contract (bearer token, JSON under /v1), with capped exponential
backoff while the server is unreachable or answering 5xx. Every retry loop is bounded by the
outage limit and stops as soon as the agent is told to stop."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator

import httpx

from shared.api import (
    AgentRegister,
    AgentRegistered,
    DeviceInfo,
    Heartbeat,
    JobFailure,
    JobLease,
    JobRelease,
    JobResult,
    LeaseRequest,
    LeaseResponse,
    Ok,
    ResultRecorded,
)

log = logging.getLogger(__name__)


class ServerUnavailable(Exception):
    """The server stayed unreachable (or 5xx) past the outage limit, or the agent is stopping."""


class ServerRejected(Exception):
    """A 4xx answer: retrying the same request will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"server answered {status}: {detail}")
        self.status = status
        self.detail = detail


def backoff_delays(initial_s: float = 0.5, cap_s: float = 30.0, factor: float = 2.0,
                   jitter: float = 0.1, rng: random.Random | None = None) -> Iterator[float]:
    """initial, initial*factor, ... capped at ``cap_s``, each with +-``jitter`` relative noise."""
    rng = rng or random.Random()
    delay = initial_s
    while True:
        yield delay * (1.0 + rng.uniform(-jitter, jitter))
        delay = min(delay * factor, cap_s)


class ServerClient:
    """The agent protocol of the profiler server for one agent: the same request and answer models
    (``shared.api``) as the lab's ``search_client.remote.ProfilerClient``, with retries that ride
    out a server restart."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0, backoff_initial_s: float = 0.5,
                 backoff_cap_s: float = 30.0, max_outage_s: float = 3600.0,
                 stop: threading.Event | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})
        self.backoff_initial_s, self.backoff_cap_s = backoff_initial_s, backoff_cap_s
        self.max_outage_s = max_outage_s
        self.stop = stop or threading.Event()
        self.last_answer = time.monotonic()  # of the last 2xx: how long the server has been gone

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, json: object = None, retry: bool = True) -> httpx.Response:
        """Send; on connection errors and 5xx wait with backoff and resend (bounded). 4xx raises."""
        delays = backoff_delays(self.backoff_initial_s, self.backoff_cap_s)
        give_up_at = time.monotonic() + self.max_outage_s
        while True:
            try:
                response = self.http.request(method, path, json=json)
                if response.status_code < 500:
                    break
                problem = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            delay = next(delays)
            if not retry or time.monotonic() + delay > give_up_at:
                raise ServerUnavailable(f"{method} {path} failed: {problem}")
            log.warning("%s %s failed (%s); retrying in %.1f s", method, path, problem, delay)
            if self.stop.wait(delay):
                raise ServerUnavailable(f"{method} {path} abandoned: agent stopping")
        if response.status_code >= 400:
            raise ServerRejected(response.status_code, _detail(response))
        self.last_answer = time.monotonic()
        return response

    def register(self, name: str, devices: list[DeviceInfo], agent_id: str | None = None) -> AgentRegistered:
        """Register the devices; ``agent_id`` keeps this agent's id (and so its leases) when re-registering."""
        body = AgentRegister(name=name, devices=devices, agent_id=agent_id).model_dump(mode="json")
        return AgentRegistered.model_validate(self.request("POST", "/v1/agents", json=body).json())

    def heartbeat(self, agent_id: str, serials: list[str]) -> Ok:
        body = Heartbeat(agent_id=agent_id, serials=serials).model_dump(mode="json")
        answer = self.request("POST", f"/v1/agents/{agent_id}/heartbeat", json=body, retry=False)
        return Ok.model_validate(answer.json())

    def lease(self, agent_id: str, serial: str) -> JobLease | None:
        body = LeaseRequest(agent_id=agent_id, serial=serial).model_dump(mode="json")
        return LeaseResponse.model_validate(self.request("POST", "/v1/jobs/lease", json=body).json()).job

    def report_result(self, job_id: int, result: JobResult) -> ResultRecorded | None:
        """The server's answer (with the device's next job when ``result.lease_next``); None when
        the lease was no longer ours (409)."""
        try:
            answer = self.request("POST", f"/v1/jobs/{job_id}/result", json=result.model_dump(mode="json"))
        except ServerRejected as exc:
            if exc.status == 409:
                log.warning("result for job %d refused: %s", job_id, exc.detail)
                return None
            raise
        return ResultRecorded.model_validate(answer.json())

    def report_failure(self, job_id: int, failure: JobFailure) -> None:
        try:
            self.request("POST", f"/v1/jobs/{job_id}/failure", json=failure.model_dump(mode="json"))
        except ServerRejected as exc:
            if exc.status != 409:
                raise
            log.warning("failure report for job %d refused: %s", job_id, exc.detail)

    def release(self, job_id: int, lease_id: str, agent_id: str | None = None) -> None:
        body = JobRelease(lease_id=lease_id, agent_id=agent_id).model_dump(mode="json")
        try:
            self.request("POST", f"/v1/jobs/{job_id}/release", json=body, retry=False)
        except (ServerRejected, ServerUnavailable) as exc:
            log.warning("could not release job %d (the lease will expire instead): %s", job_id, exc)

    def download(self, url: str) -> bytes:
        return self.request("GET", url).content


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
