"""Benchmark: serving predictions over loopback from a real ``profiler-server`` (uvicorn), next to
the ceiling of the bare stack, measured in the same run with the same client loop.

1. **Ceiling**: a bare FastAPI + uvicorn app (same uvicorn settings) answering a constant JSON to the
   same POST bodies; requests/s and p99 with ``--clients`` keep-alive clients.
2. **Idle server**: single-block ``/v1/predict`` with the same loop, cycling through 400 configs
   predicted once before (as a search asks for its blocks again and again); the ratio to the ceiling.
   Both run side by side and are measured in alternating slices (``--rounds``, ``2 * --seconds`` in
   all each), so that the machine's drifting load weighs on both alike.
3. **10,000-block batch**: server time of one request (its ``Server-Timing`` header) and end-to-end
   time (cold: never seen; warm: the same batch again, its blocks remembered but its body parsed).
4. **During a campaign**: the single-block loop again while the server exports a campaign and
   synthetic agents lease and report its jobs as fast as the server answers; p99 against idle.

The predictor served is a freshly initialized one of the size the server fits
(``TrainSettings``: hidden width, depth, cost-affine part), written straight into a new SQLite
database (its weights do not change the cost of a prediction, its size does), so the bench needs
nothing from other runs.
Prints the figures and writes ``runs/bench/serving.json``; the last line says whether every target
was met, and the exit code is 1 when one was not.
Targets: ratio >= 0.8, batch <= 30 ms (warm median of server time), campaign p99 <= 2x idle p99.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_predictor import sample_configs  # noqa: E402

from profiler_server.db import Database, PredictorVersion, upgrade_database  # noqa: E402
from profiler_server.predictor.encode import encode_many  # noqa: E402
from profiler_server.predictor.fit import TrainSettings, feature_ranges  # noqa: E402
from search_client.pipeline.localfarm import free_port  # noqa: E402
from shared.export import sha256_bytes  # noqa: E402
from shared.predictor import LatencyMLP, dump_predictor  # noqa: E402

ADMIN = "bench-serving-admin-token"
DEVICE_CLASS = "host/bench-serving"
RUNTIME = "onnxruntime/t1/cpu"
TARGETS = {"ratio_min": 0.8, "batch_10000_ms_max": 30.0, "campaign_p99_over_idle_max": 2.0}

# The bare stack: the same uvicorn settings as ``profiler-server`` (profiler_server/cli.py).
BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.post("/v1/predict")
async def predict() -> dict:
    return {"predictor": {"id": 1, "version": 1}, "block_ms": [1.0], "total_ms": 1.0}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=5)
"""


def seed_predictor(url: str) -> None:
    """A new database holding one ready predictor (random weights, ranges of the bench's configs)."""
    db = Database(url)
    upgrade_database(db.engine)
    torch.manual_seed(0)
    configs = sample_configs(400, 3)
    recipe = TrainSettings()
    model = LatencyMLP(hidden=recipe.hidden, n_layers=recipe.n_layers, cost_affine=recipe.cost_affine).eval()
    ranges = feature_ranges(configs, encode_many(configs))
    blob = dump_predictor(model, {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "version": 1})
    with db.transaction() as s:
        s.add(PredictorVersion(device_class=DEVICE_CLASS, runtime=RUNTIME, version=1, state="ready", blob=blob,
                               blob_sha256=sha256_bytes(blob), feature_ranges=ranges, metrics={}))  # fmt: skip
    db.dispose()


def wait_ready(proc: subprocess.Popen, port: int, path: str, method: str = "GET") -> None:
    for _ in range(600):  # up to 120 s for start-up and migrations on a busy machine
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(method, path, body=b"{}" if method == "POST" else None)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server on port {port} did not answer {path} in 120 s")


def start_server(data: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "profiler_server.cli", "--db", f"sqlite:///{data}/profiler.db", "--data",
           str(data), "--port", str(port), "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "RTSEG_ADMIN_TOKEN": ADMIN})
    wait_ready(proc, port, "/readyz")
    wait_children_idle(proc.pid)
    return proc


def children_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the direct children of ``pid`` (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def wait_children_idle(pid: int, timeout_s: float = 90.0) -> None:
    """Until the server's child processes (its export worker, importing torch at a lower priority
    after start-up) stop using CPU, so that the phases measure the server, not its start-up."""
    deadline, before = time.monotonic() + timeout_s, children_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = children_cpu_s(pid)
        if now - before < 0.05:
            return
        before = now


def start_bare(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    wait_ready(proc, port, "/v1/predict", "POST")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, resp.read()


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict | None = None) -> dict:
    status, data = request(conn, "POST", path, body, headers)
    if status >= 300:
        raise RuntimeError(f"{path} -> {status}: {data[:300]!r}")
    return json.loads(data)


def request_loop(port: int, bodies: list[bytes], clients: int, seconds: float) -> tuple[int, list[float], float]:
    """One-block predictions from ``clients`` keep-alive connections for ``seconds``: the number
    of answers, each one's latency (s) and the wall time."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop_at = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        j = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            post(conn, "/v1/predict", bodies[j % len(bodies)])
            latencies[i].append(time.perf_counter() - t0)
            j += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for lat in latencies for x in lat]
    return len(flat), flat, time.perf_counter() - t0


def rate_summary(clients: int, count: int, latencies: list[float], wall: float) -> dict:
    flat = sorted(latencies)
    return {"clients": clients, "requests": count, "seconds": round(wall, 2), "per_s": round(count / wall, 1),
            "p50_ms": round(flat[len(flat) // 2] * 1e3, 2), "p99_ms": round(flat[int(len(flat) * 0.99)] * 1e3, 2)}  # fmt: skip


def single_block_rate(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """Requests/s and latency of one-block predictions from ``clients`` keep-alive connections."""
    return rate_summary(clients, *request_loop(port, bodies, clients, seconds))


def interleaved_rates(ports: dict[str, int], bodies: list[bytes], clients: int, seconds: float,
                      rounds: int) -> dict[str, dict]:  # fmt: skip
    """The same loop against each port in turn, ``rounds`` times, ``seconds / rounds`` a slice:
    the machine's load drifts over seconds, and alternating short slices gives each app the same
    share of it (one phase after the other measured the drift as often as the apps)."""
    totals = {name: [0, [], 0.0] for name in ports}
    for _ in range(rounds):
        for name, port in ports.items():
            count, latencies, wall = request_loop(port, bodies, clients, seconds / rounds)
            totals[name][0] += count
            totals[name][1] += latencies
            totals[name][2] += wall
    return {name: {**rate_summary(clients, *t), "slices": rounds} for name, t in totals.items()}


def batch_times(port: int, body: bytes, repeats: int = 6) -> tuple[list[float], list[float]]:
    """End-to-end and server-side (its ``Server-Timing`` header) milliseconds of each request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    end_to_end, server = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        end_to_end.append(round((time.perf_counter() - t0) * 1e3, 2))
        if resp.status != 200 or len(answer["block_ms"]) != 10_000:
            raise RuntimeError(f"10,000-block batch -> {resp.status}: {str(answer)[:300]}")
        server.append(float(resp.getheader("server-timing", "app;dur=nan").partition(";dur=")[2]))
    return end_to_end, server


STATS = {"median_ms": 1.0, "mean_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.1, "std_ms": 0.05, "runs": 50,
         "samples_ms": [1.0] * 50, "tool": "bench"}  # fmt: skip


def synthetic_agent(port: int, index: int, stop: threading.Event, counter: list[int]) -> None:
    """Leases and reports jobs of ``DEVICE_CLASS`` as fast as the server answers, until ``stop``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    token = post(conn, "/v1/tokens", json.dumps({"role": "agent"}).encode(), admin)["token"]
    auth = {"Authorization": f"Bearer {token}"}
    serial = f"bench-agent-{index}"
    device = {"serial": serial, "device_class": DEVICE_CLASS, "kind": "host"}
    agent_id = post(conn, "/v1/agents", json.dumps({"name": serial, "devices": [device]}).encode(), auth)["agent_id"]
    lease_body = json.dumps({"agent_id": agent_id, "serial": serial}).encode()
    while not stop.is_set():
        job = post(conn, "/v1/jobs/lease", lease_body, auth)["job"]
        if job is None:
            time.sleep(0.05)  # the export has not queued the next job yet
            continue
        result = {"lease_id": job["lease_id"], "serial": serial, "stats": STATS}
        post(conn, f"/v1/jobs/{job['job_id']}/result", json.dumps(result).encode(), auth)
        counter[index] += 1


def wait_first_jobs(conn: http.client.HTTPConnection, campaign_id: int, headers: dict) -> None:
    """Until the export has queued jobs (its start-up alone took over 4 s on a loaded machine, and
    a phase measured before it would have no agents leasing)."""
    for _ in range(600):  # up to 120 s
        _, data = request(conn, "GET", f"/v1/campaigns/{campaign_id}", headers=headers)
        if json.loads(data).get("jobs", 0) > 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"campaign {campaign_id} queued no job in 120 s")


def during_campaign(port: int, bodies: list[bytes], clients: int, seconds: float, agents: int) -> dict:
    """The single-block loop while a campaign exports and ``agents`` agents lease and report its jobs."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    campaign = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "n": 400, "sampling": "uniform", "seed": 5,
                "min_seconds": 0, "runs": 1, "warmup": 0, "wait_s": 0}  # fmt: skip
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = post(conn, "/v1/campaigns", json.dumps(campaign).encode(), admin)
    wait_first_jobs(conn, created["id"], admin)
    stop_event, counter = threading.Event(), [0] * agents
    threads = [threading.Thread(target=synthetic_agent, args=(port, i, stop_event, counter)) for i in range(agents)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # agents registered and the export under way
    try:
        rate = single_block_rate(port, bodies, clients, seconds)
    finally:
        stop_event.set()
        for t in threads:
            t.join()
    # a new connection: the phase outlasts uvicorn's keep-alive, which closed the first one
    _, data = request(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "GET",
                      f"/v1/campaigns/{created['id']}", headers=admin)  # fmt: skip
    view = json.loads(data)
    return {**rate, "agents": agents, "round_trips": sum(counter), "campaign_state": view.get("state"),
            "campaign": {k: v for k, v in view.items() if isinstance(v, (int, float, str))}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each request-rate phase")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4, help="alternating slices of the bare stack and the server")
    ap.add_argument("--agents", type=int, default=2, help="synthetic agents during the campaign phase")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/serving.json"))
    args = ap.parse_args(argv)
    target = {"device_class": DEVICE_CLASS, "runtime": RUNTIME}
    singles = [json.dumps({**target, "blocks": [c.model_dump()]}).encode() for c in sample_configs(400, 7)]
    batch = json.dumps({**target, "blocks": [c.model_dump() for c in sample_configs(10_000, 11)]}).encode()
    # A search asks for the same few hundred blocks again and again: the loop cycles through 400
    # configs that the server has predicted once before (the 10,000-block batch is never seen).
    warm_batch = json.dumps({**target, "blocks": [json.loads(b)["blocks"][0] for b in singles]}).encode()
    load_before = os.getloadavg()[0]
    bare_port = free_port()
    bare = start_bare(bare_port)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
            data, port = Path(tmp), free_port()
            seed_predictor(f"sqlite:///{data}/profiler.db")
            proc = start_server(data, port)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                post(conn, "/v1/predict", warm_batch)  # the predictor is in memory and has seen these blocks
                rates = interleaved_rates({"bare": bare_port, "server": port}, singles, args.clients,
                                          2 * args.seconds, args.rounds)  # fmt: skip
                ceiling, idle = rates["bare"], rates["server"]
                stop(bare)
                times, server_times = batch_times(port, batch)
                busy = during_campaign(port, singles, args.clients, args.seconds, args.agents)
            finally:
                stop(proc)
    finally:
        if bare.poll() is None:
            stop(bare)
    ratio = idle["per_s"] / ceiling["per_s"]
    warm = statistics.median(server_times[1:])
    p99_ratio = busy["p99_ms"] / idle["p99_ms"]
    met = {"ratio": ratio >= TARGETS["ratio_min"], "batch": warm <= TARGETS["batch_10000_ms_max"],
           "campaign_p99": p99_ratio <= TARGETS["campaign_p99_over_idle_max"]}  # fmt: skip
    out = {"bare_stack": ceiling, "single_block": idle, "ratio_to_bare_stack": round(ratio, 3),
           "batch_10000_ms": {"server": {"cold": server_times[0], "warm_median": warm, "all": server_times},
                              "end_to_end": {"cold": times[0], "warm_median": statistics.median(times[1:]),
                                             "all": times}},
           "during_campaign": busy, "campaign_p99_over_idle": round(p99_ratio, 2), "targets": TARGETS,
           "targets_met": met, "cpus": os.cpu_count(), "load_average_1m_before": round(load_before, 2),
           "load_average_1m_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    print(f"bare FastAPI + uvicorn, constant JSON: {ceiling['per_s']:.0f}/s with {args.clients} clients "
          f"(p50 {ceiling['p50_ms']:.2f} ms, p99 {ceiling['p99_ms']:.2f} ms)")
    print(f"single-block /v1/predict: {idle['per_s']:.0f}/s (p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms)"
          f" = {ratio:.2f} of the bare stack (target >= {TARGETS['ratio_min']})")
    print(f"10,000-block batch, server time: cold {server_times[0]:.0f} ms, warm median {warm:.1f} ms "
          f"(target <= {TARGETS['batch_10000_ms_max']:.0f} ms); end to end: cold {times[0]:.0f} ms, "
          f"warm median {statistics.median(times[1:]):.1f} ms")
    print(f"during a campaign ({args.agents} agents, {busy['round_trips']} lease + report round trips): "
          f"{busy['per_s']:.0f}/s, p99 {busy['p99_ms']:.2f} ms = {p99_ratio:.2f}x idle "
          f"(target <= {TARGETS['campaign_p99_over_idle_max']}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    missed = [k for k, ok in met.items() if not ok]
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    print(f"all serving targets met ({load})" if not missed else f"TARGETS MISSED: {', '.join(missed)} ({load})")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
