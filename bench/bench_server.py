"""Benchmark: lease + report round trips per second, 8 concurrent agents, SQLite, real uvicorn.

Starts ``profiler-server`` as its own process on loopback with a fresh file database, queues
``--jobs`` measurement jobs, then runs 8 agents (asyncio, each its own token, device and keep-alive
connection) that lease a job and report synthetic stats as fast as the server allows, for
``--seconds``. One round trip is one job: one lease call and one result call, both answered 200.
Every job must end with exactly one measurement. Prints the figure and writes
``runs/bench/server.json``; the last line says whether the target was met (exit code 1 if not).
Target: >= 1,000 round trips/s on 2 cores. The clock starts once the server has settled (its
export worker imports torch for several seconds after a start) and every agent is registered.
The CPU per round trip is printed for the server process (HTTP) and the agent process (the
transactions): on a shared machine that is the steadier figure, and the larger of the two bounds
the rate (1000 / it, with a core each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testkit/ (not installed)
from profiler_server.db import Artifact, Database, Job, Measurement, Team, upgrade_database  # noqa: E402
from shared.schemas import RuntimeSettings  # noqa: E402
from testkit.live_server import ServerProcess  # noqa: E402

ADMIN = "bench-admin-token"
TARGET = 1000
PROTOCOLS = {"agent": "one call per job: the result asks for the next job, as phone-agent does",
             "separate": "a lease call and a result call per job"}  # fmt: skip
DEVICE_CLASS = "host/bench"
STATS = {"median_ms": 1.0, "mean_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1, "std_ms": 0.05, "runs": 50,
         "samples_ms": [1.0] * 50, "tool": "bench"}  # fmt: skip


def seed_jobs(url: str, n: int) -> None:
    """Queue n jobs directly in the database (exporting n blocks is not what is measured here)."""
    db = Database(url)
    upgrade_database(db.engine)
    runtime = RuntimeSettings()
    settings = {"runtime": runtime.model_dump(), "warmup": 10, "runs": 50, "min_seconds": 1.0}
    with db.transaction() as s:
        team = Team(name="bench")
        s.add_all([team, Artifact(sha256="0" * 64, format="onnx", size=0, kind="conv")])
        s.flush()
        s.add_all(
            Job(
                team_id=team.id,
                artifact_sha256="0" * 64,
                kind="conv",
                device_class=DEVICE_CLASS,
                runtime=runtime.key(),
                settings=settings,
            )  # fmt: skip
            for _ in range(n)
        )
    db.dispose()


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client (JSON in, JSON out) for the bench's agents: httpx cost
    the load generator 3-6 ms of CPU per round trip, more than the server, on the same two cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.token = host, port, ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body).encode()
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{auth}Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n")  # fmt: skip
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), json.loads(await self.reader.readexactly(length))

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def agent(url: str, index: int, seconds: float, ready: asyncio.Barrier, latencies: list[float],
                protocol: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    http = RawHttp(host, int(port))
    try:
        http.token = ADMIN
        status, token = await http.post("/v1/tokens", {"role": "agent"})
        http.token = token["token"]
        serial = f"bench-{index}"
        body = {"name": serial, "devices": [{"serial": serial, "device_class": DEVICE_CLASS, "kind": "host"}]}
        agent_id = (await http.post("/v1/agents", body))[1]["agent_id"]
        await ready.wait()  # the clock starts when every agent is registered
        stop_at = time.monotonic() + seconds
        done = 0
        job = None
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            if job is None:
                status, leased = await http.post("/v1/jobs/lease", {"agent_id": agent_id, "serial": serial})
                if status != 200:
                    raise SystemExit(f"bench_server: lease answered {status}: {leased}")
                job = leased["job"]
                if job is None:
                    break
            result = {"lease_id": job["lease_id"], "serial": serial, "stats": STATS}
            if protocol == "agent":  # as phone-agent does: the result asks for the device's next job
                result |= {"lease_next": time.monotonic() < stop_at, "agent_id": agent_id}
            status, answer = await http.post(f"/v1/jobs/{job['job_id']}/result", result)
            if status != 200:
                raise SystemExit(f"bench_server: result answered {status}: {answer}")
            job = answer.get("next_job")
            latencies.append(time.perf_counter() - t0)
            done += 1
        if job is not None:  # handed over after the clock stopped: give it back
            await http.post(f"/v1/jobs/{job['job_id']}/release", {"lease_id": job["lease_id"], "agent_id": agent_id})
        return done
    finally:
        await http.close()


async def run_agents(url: str, n_agents: int, seconds: float, protocol: str) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    ready = asyncio.Barrier(n_agents + 1)
    tasks = [asyncio.create_task(agent(url, i, seconds, ready, latencies, protocol)) for i in range(n_agents)]
    await ready.wait()
    start = time.monotonic()
    counts = await asyncio.gather(*tasks)
    return sum(counts), time.monotonic() - start, latencies


def check_exactly_once(db_url: str) -> dict:
    db = Database(db_url)
    with db.sessionmaker() as s:
        done = s.scalar(select(func.count()).where(Job.state == "done"))
        rows = s.scalar(select(func.count()).select_from(Measurement))
        distinct = s.scalar(select(func.count(func.distinct(Measurement.job_id))))
    db.dispose()
    return {"jobs_done": done, "measurement_rows": rows, "distinct_jobs_measured": distinct}


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_by_process(pid: int) -> dict[str, float]:
    """User + system CPU seconds so far of the server process and its descendants, from Linux
    /proc, by role: the server process (HTTP; its workers with ``--workers``), the agent process
    (the agents' transactions, with the fork server that starts it) and the rest (the export
    worker, idle here once started)."""
    stats, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = _stat(int(entry.name))
                commands[int(entry.name)] = (entry / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
                continue
    family = {pid}
    for _ in range(4):  # server -> fork server -> agent process; supervisor -> workers -> ...
        family |= {p for p, fields in stats.items() if int(fields[1]) in family}  # fields[1]: parent pid
    seconds = {"server": 0.0, "agent_process": 0.0, "other": 0.0}
    for p in family & stats.keys():
        role = ("server" if p == pid or b"profiler_server.cli" in commands[p] or b"uvicorn" in commands[p]
                else "agent_process" if b"forkserver" in commands[p] else "other")  # fmt: skip
        seconds[role] += (int(stats[p][11]) + int(stats[p][12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def wait_until_settled(pid: int, limit_s: float = 90.0, idle_share: float = 0.1) -> float:
    """Seconds waited until the server and its descendants use under ``idle_share`` of a core
    (at most ``limit_s``): a server that has just started still imports torch in its export
    worker for several seconds, which is not what this bench measures."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = sum(cpu_by_process(pid).values())
        time.sleep(1.0)
        if sum(cpu_by_process(pid).values()) - before < idle_share:
            break
    return round(time.monotonic() - start, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
                   help="agent: the result asks for the next job (phone-agent's calls); separate: "
                        "a lease call and a result call per job")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="server processes (profiler-server --workers)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/server.json"))
    args = p.parse_args()
    results = {protocol: run_protocol(protocol, args) for protocol in args.protocols}
    report = {**results, "load_average_1m_after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "database": "sqlite (WAL, file)",
              "target_round_trips_per_s": TARGET}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if not all(r["exactly_once"] for r in results.values()):
        raise SystemExit("bench_server: some job was measured more or less than once")
    for protocol, r in results.items():
        print(f"{protocol}: {r['round_trips_per_s']:.0f} round trips/s, "
              f"{r['server_cpu_ms_per_round_trip']} ms of server CPU each ({PROTOCOLS[protocol]})")
    judged = results.get("agent") or next(iter(results.values()))
    rate = judged["round_trips_per_s"]
    verdict = "MET" if rate >= TARGET else "NOT MET"
    print(f"lease + report: {rate:.0f} round trips/s with {args.agents} agents, {judged['protocol']} "
          f"(target >= {TARGET}): {verdict}; {judged['server_cpu_ms_per_round_trip']} ms of server CPU "
          f"per round trip; load average {report['load_average_1m_after']} on {os.cpu_count()} CPUs")
    if rate < TARGET:
        raise SystemExit(1)


def run_protocol(protocol: str, args: argparse.Namespace) -> dict:
    """One fresh server and database, the agents on ``protocol`` for ``args.seconds``."""
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        data = Path(tmp) / "data"  # the server's log goes beside it, in the temporary folder
        data.mkdir()
        db_url = f"sqlite:///{data}/profiler.db"
        seed_jobs(db_url, args.jobs)
        server = ServerProcess(data, env={"RTSEG_ADMIN_TOKEN": ADMIN}, workers=args.workers).start()
        load_before = os.getloadavg()[0]
        try:
            pid = server.proc.pid
            settle_s = wait_until_settled(pid)
            cpu0, client0 = cpu_by_process(pid), time.process_time()
            total, elapsed, lat = asyncio.run(run_agents(server.url, args.agents, args.seconds, protocol))
            cpu1, client_cpu = cpu_by_process(pid), time.process_time() - client0
            cpu = {role: cpu1[role] - cpu0[role] for role in cpu0}
            server_cpu = sum(cpu.values())
        finally:
            server.stop()  # terminate, not kill: the supervisor stops its workers
        integrity = check_exactly_once(db_url)
    lat.sort()
    result = {
        "protocol": protocol,
        "workers": args.workers,
        "round_trips_per_s": round(total / elapsed, 1),
        "round_trips": total,
        "seconds": round(elapsed, 2),
        "agents": args.agents,
        "latency_ms_p50": round(1000 * lat[len(lat) // 2], 2) if lat else None,
        "latency_ms_p95": round(1000 * lat[int(len(lat) * 0.95)], 2) if lat else None,
        # The machine is shared: the CPU the server actually got says what it costs per round trip.
        "server_cpu_ms_per_round_trip": round(1000 * server_cpu / max(total, 1), 2),
        "server_cpu_share": round(server_cpu / elapsed, 2),
        "cpu_ms_per_round_trip_by_process": {role: round(1000 * c / max(total, 1), 3) for role, c in cpu.items()},
        "cpu_share_by_process": {role: round(c / elapsed, 2) for role, c in cpu.items()},
        "waited_for_server_to_settle_s": settle_s,
        "client_cpu_share": round(client_cpu / elapsed, 2),
        "load_average_1m_before": round(load_before, 2),
        "round_trips_per_server_cpu_s": round(total / max(server_cpu, 1e-9), 1),
        **integrity,
    }
    result["exactly_once"] = (
        integrity["measurement_rows"] == integrity["distinct_jobs_measured"] == integrity["jobs_done"] == total
    )
    return result


if __name__ == "__main__":
    main()
