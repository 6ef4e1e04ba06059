"""The phone-agent: registers this machine's devices with the server, heartbeats, and runs one
worker thread per device that leases a job, downloads its artifact (sha256 verified, cached),
measures it and reports the result or the failure.

Survives: a server restart (requests retry with capped exponential backoff); a phone unplugged
mid-job (the job is reported failed with ``retry=True`` so another phone takes it); SIGTERM (workers
finish the job in hand within a grace period, then any lease still held is released). Stops on its
own when the server has not answered for ``max_outage_s`` (gone, or another program on its port),
or when the process that started it is gone (``parent_pid``: the agent of ``--host-device``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from android_harness.adb import AdbRunner, AdbSettings, discover
from android_harness.adb_io import adb_client
from android_harness.artifact_cache import ArtifactCache
from android_harness.errors import DeviceOffline, HarnessError, MeasurementAborted, UnsupportedModel
from android_harness.host import HOST_SERIAL, HostRunner
from android_harness.runner import RUNTIME_OF_FORMAT, MeasureOptions, Runner
from android_harness.server_client import ServerClient, ServerRejected, ServerUnavailable
from shared.schemas import JobFailure, JobLease, JobResult, MeasurementStats

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_ERROR = 2000
_MAX_OUTPUT = 200_000


@dataclass
class AgentConfig:
    server: str
    token: str
    name: str = field(default_factory=socket.gethostname)
    host_device: bool = False
    use_adb: bool = True
    adb_port: int | None = None
    binaries: dict[str, Path] = field(default_factory=dict)  # tool name -> local benchmark binary
    cache_dir: Path = Path("var/agent-cache")
    poll_s: float = 2.0  # idle wait when the queue is empty
    rediscover_s: float = 30.0  # how often attached phones are listed again
    shutdown_grace_s: float = 60.0  # how long SIGTERM waits for jobs in hand
    max_jobs: int | None = None  # stop after this many jobs (tests, one-shot runs)
    request_timeout_s: float = 30.0
    backoff_cap_s: float = 30.0
    max_outage_s: float = 3600.0  # stop after this long without a 2xx answer from the server
    parent_pid: int | None = None  # stop once this process is no longer our parent
    max_measure_s: float = 120.0  # per-run cap handed to runners (max_seconds)


def lease_options(lease: JobLease, max_seconds: float) -> MeasureOptions:
    """MeasureOptions for a leased job; a runtime that does not match the artifact is unsupported.
    A one-kernel model is measured as the kernel costs inside a whole model: without the layout
    conversions its isolation adds (host onnxruntime; other runners add none)."""
    if RUNTIME_OF_FORMAT[lease.format] != lease.settings.runtime:
        raise UnsupportedModel(f"job {lease.job_id}: a .{lease.format} artifact cannot run on {lease.settings.runtime}")
    return MeasureOptions(threads=lease.settings.threads, delegate=lease.settings.delegate, warmup=lease.warmup,
                          runs=lease.runs, min_seconds=lease.min_seconds,
                          max_seconds=max(max_seconds, lease.min_seconds * 2),
                          exclude_layout_reorders=lease.kind == "kernel")


class JobCounter:
    """Shared budget of jobs (``max_jobs``); unlimited when None."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.taken = limit, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.taken >= self.limit:
                return False
            self.taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.taken -= 1

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.limit is not None and self.taken >= self.limit


class DeviceWorker(threading.Thread):
    """Leases and measures jobs for one device until stopped or the device goes away."""

    def __init__(self, agent: Agent, serial: str, runner: Runner) -> None:
        super().__init__(name=f"worker-{serial}", daemon=True)
        self.agent, self.serial, self.runner = agent, serial, runner
        self.current: JobLease | None = None
        self.device_gone = False
        self.jobs_done = 0

    def run(self) -> None:
        stop = self.agent.stop_event
        lease: JobLease | None = None  # the next job, handed over with the last result
        while not stop.is_set() and not self.device_gone:
            if lease is None:
                if not self.agent.jobs.take():
                    return
                try:
                    lease = self.agent.client.lease(self.agent.agent_id, self.serial)
                except (ServerUnavailable, ServerRejected) as exc:
                    self.agent.jobs.give_back()
                    log.warning("%s: lease failed: %s", self.serial, exc)
                    stop.wait(self.agent.config.poll_s)
                    continue
                if lease is None:
                    self.agent.jobs.give_back()
                    stop.wait(self.agent.config.poll_s)
                    continue
            self.current, handed_over = lease, None
            try:
                handed_over = self.run_job(lease)
            finally:
                self.current = lease = handed_over  # held from here: a shutdown releases it
                self.jobs_done += 1
        if lease is not None:  # stopping (or the device went away) before starting it
            self.current = None
            self.agent.jobs.give_back()
            self.agent.release_held([(self.serial, lease)])

    def run_job(self, lease: JobLease) -> JobLease | None:
        """Measure the leased job and report it; returns the device's next job when the server
        handed one over with the result (one call per job instead of a lease and a result)."""
        try:
            options = lease_options(lease, self.agent.config.max_measure_s)
            path = self.agent.cache.get(lease.artifact_sha256, lease.format,
                                        lambda: self.agent.client.download(lease.artifact_url))
            stats = self.runner.measure(path, options)
        except MeasurementAborted:
            log.warning("%s: job %d aborted at shutdown; its lease is released", self.serial, lease.job_id)
        except DeviceOffline as exc:
            self.device_gone = True
            self._fail(lease, exc, retry=True)
        except UnsupportedModel as exc:
            self._fail(lease, exc, retry=False)
        except (HarnessError, ServerRejected, ServerUnavailable) as exc:
            self._fail(lease, exc, retry=True)
        else:
            return self._report_and_lease_next(lease, stats)
        return None

    def _report_and_lease_next(self, lease: JobLease, stats: MeasurementStats) -> JobLease | None:
        agent_id = self.agent.agent_id
        wants_next = bool(agent_id) and not self.agent.stop_event.is_set() and self.agent.jobs.take()
        result = JobResult(lease_id=lease.lease_id, serial=self.serial, stats=stats,
                           lease_next=wants_next, agent_id=agent_id if wants_next else None)
        answer = self._report(lambda: self.agent.client.report_result(lease.job_id, result))
        log.info("%s: job %d median %.3f ms (%s)", self.serial, lease.job_id, stats.median_ms,
                 "accepted" if answer is not None else "refused")
        handed_over = answer.next_job if answer is not None else None
        if wants_next and handed_over is None:
            self.agent.jobs.give_back()
            if answer is not None and answer.next_error:
                log.warning("%s: no next job with the result: %s", self.serial, answer.next_error)
        return handed_over

    def _fail(self, lease: JobLease, exc: Exception, retry: bool) -> None:
        log.warning("%s: job %d failed: %s", self.serial, lease.job_id, exc)
        failure = JobFailure(lease_id=lease.lease_id, serial=self.serial, agent_id=self.agent.agent_id or None,
                             error=str(exc)[:_MAX_ERROR],
                             output=getattr(exc, "output", "")[-_MAX_OUTPUT:], retry=retry)
        self._report(lambda: self.agent.client.report_failure(lease.job_id, failure))

    def _report(self, send: Callable[[], T]) -> T | None:
        try:
            return send()
        except (ServerUnavailable, ServerRejected) as exc:
            # the lease will expire on the server and the job goes back to the queue: not lost
            log.error("%s: could not report job outcome: %s", self.serial, exc)
            return None


class Agent:
    """Runs the farm side for this machine. ``run()`` blocks until stopped (or ``max_jobs`` done)."""

    def __init__(self, config: AgentConfig, runners: dict[str, Runner] | None = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.abort_event = threading.Event()  # set after the shutdown grace: measurements in progress stop
        self.client = ServerClient(config.server, config.token, timeout_s=config.request_timeout_s,
                                   backoff_cap_s=config.backoff_cap_s, max_outage_s=config.max_outage_s,
                                   stop=self.stop_event)
        self.cache = ArtifactCache(config.cache_dir)
        self.jobs = JobCounter(config.max_jobs)
        self._fixed_runners = runners
        self.runners: dict[str, Runner] = {}
        self.workers: dict[str, DeviceWorker] = {}
        self.agent_id = ""
        self.heartbeat_s = 10.0

    # --- devices -----------------------------------------------------------------------------

    def discover_runners(self) -> dict[str, Runner]:
        if self._fixed_runners is not None:
            return dict(self._fixed_runners)
        runners: dict[str, Runner] = {}
        if self.config.host_device:
            runners[HOST_SERIAL] = self.runners.get(HOST_SERIAL) or HostRunner(self.abort_event)
        if self.config.use_adb:
            try:
                client = adb_client(self.config.adb_port)
                for serial in discover(client):
                    old = self.runners.get(serial)
                    runners[serial] = old or AdbRunner(serial, client, self.config.binaries, AdbSettings(), self.abort_event)
            except HarnessError as exc:
                log.warning("no adb devices (adb server unreachable?): %s", exc)
        return runners

    def _refresh_devices(self) -> None:
        """(Re-)register when the set of live devices changed and start workers for new ones."""
        found = self.discover_runners()
        live = {s for s, w in self.workers.items() if w.is_alive() and not w.device_gone}
        if set(found) == live and self.agent_id:
            return
        infos = []
        for serial, runner in found.items():
            try:
                infos.append(runner.device_info())
            except HarnessError as exc:
                log.warning("skipping %s: %s", serial, exc)
        registered = self.client.register(self.config.name, infos, self.agent_id or None)
        self.agent_id, self.heartbeat_s = registered.agent_id, registered.heartbeat_s
        self.runners = {i.serial: found[i.serial] for i in infos}
        for serial, runner in self.runners.items():
            if serial not in live:
                self.workers[serial] = DeviceWorker(self, serial, runner)
                self.workers[serial].start()
        log.info("agent %s serving %s", self.agent_id, sorted(self.runners) or "no devices")

    def live_serials(self) -> list[str]:
        return sorted(s for s, w in self.workers.items() if w.is_alive() and not w.device_gone)

    # --- lifecycle ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.stop())

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        if self.config.parent_pid is not None:
            threading.Thread(target=self._watch_parent, name="watch-parent", daemon=True).start()
        try:
            self._refresh_devices()
            next_discovery = time.monotonic() + self.config.rediscover_s
            next_heartbeat = 0.0
            while not self.stop_event.is_set():
                if self.jobs.exhausted and not any(w.current for w in self.workers.values()):
                    break
                if self._orphaned():
                    break
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = time.monotonic() + self.heartbeat_s
                if time.monotonic() >= next_discovery:
                    self._refresh_devices()
                    next_discovery = time.monotonic() + self.config.rediscover_s
                self.stop_event.wait(min(self.heartbeat_s, self.config.poll_s, 1.0))
        except (ServerUnavailable, ServerRejected) as exc:
            log.error("giving up: %s", exc)
        finally:
            self.stop_event.set()
            self._shutdown()

    def _watch_parent(self) -> None:
        """Stop the agent once the process that started it is gone (we were re-parented), even
        while a request is retrying against its dead server."""
        while not self.stop_event.wait(0.5):
            if os.getppid() != self.config.parent_pid:
                log.error("the process that started this agent (pid %d) is gone; stopping", self.config.parent_pid)
                self.stop()

    def _orphaned(self) -> bool:
        """True when the server stayed silent too long (gone, or another program on its port)."""
        silent_s = time.monotonic() - self.client.last_answer
        if silent_s > self.config.max_outage_s:
            log.error("no answer from %s for %.0f s; stopping", self.config.server, silent_s)
            return True
        return False

    def _heartbeat(self) -> None:
        try:
            self.client.heartbeat(self.agent_id, self.live_serials())
        except ServerRejected as exc:
            if exc.status in (401, 403):
                raise ServerUnavailable(f"the server refuses this agent's token: {exc.detail}") from exc
            log.warning("heartbeat refused (%s); registering again", exc.detail)
            self.agent_id = ""
            self._refresh_devices()
        except ServerUnavailable as exc:
            log.warning("heartbeat failed: %s", exc)

    def _shutdown(self) -> None:
        """Give jobs in hand a grace period, then hand back any lease still held."""
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for worker in self.workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
        held = [(w.serial, w.current) for w in self.workers.values() if w.is_alive() and w.current is not None]
        self.abort_event.set()  # read the leases first: an aborted worker forgets its lease at once
        try:
            self.release_held(held)
            for worker in self.workers.values():
                worker.join(5.0)  # aborted measurements stop within a fraction of a second
        finally:
            self.client.close()

    def release_held(self, held: list[tuple[str, JobLease]]) -> None:
        """Hand back leases this agent will not finish, through a client of their own (the agent's
        client stops answering once the stop flag is set)."""
        if not held:
            return
        client = ServerClient(self.config.server, self.config.token, timeout_s=5.0)
        try:
            for serial, lease in held:
                log.warning("releasing job %d held for %s", lease.job_id, serial)
                client.release(lease.job_id, lease.lease_id, self.agent_id or None)
        finally:
            client.close()
