"""Benchmark: serving predictions over loopback from a real ``profiler-server`` (uvicorn).

Needs the database left by ``bench/bench_predictor.py`` (``runs/bench-predictor/profiler.db``).
Measures single-block predictions per second with 4 concurrent keep-alive clients, and the wall
time of one 10,000-block batch (cold: blocks never seen; warm: the same batch again).
Prints the figures and writes ``runs/bench/serving.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_predictor import sample_configs  # noqa: E402

DB = Path("runs/bench-predictor/profiler.db")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int, data_dir: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "profiler_server.cli", "--db", f"sqlite:///{db}", "--data", data_dir,
           "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "RTSEG_ADMIN_TOKEN": "bench-serving-admin-token"}
    proc = subprocess.Popen(cmd, env=env)
    for _ in range(300):  # up to 60 s for start-up and migrations
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("profiler-server did not become ready in 60 s")


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> dict:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path} -> {resp.status}: {data[:300]!r}")
    return json.loads(data)


def single_block_rate(port: int, bodies: list[bytes], clients: int = 4, seconds: float = 6.0) -> dict:
    """Requests/s of one-block predictions from ``clients`` keep-alive connections in parallel."""
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        j = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            post(conn, "/v1/predict", bodies[j % len(bodies)])
            latencies[i].append(time.perf_counter() - t0)
            counts[i] += 1
            j += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = sorted(x for lat in latencies for x in lat)
    return {"clients": clients, "requests": sum(counts), "seconds": wall, "per_s": sum(counts) / wall,
            "p50_ms": flat[len(flat) // 2] * 1e3, "p99_ms": flat[int(len(flat) * 0.99)] * 1e3}


def batch_times(port: int, body: bytes, repeats: int = 5) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        answer = post(conn, "/v1/predict", body)
        out.append((time.perf_counter() - t0) * 1e3)
        assert len(answer["block_ms"]) == 10_000
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, default=DB)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args(argv)
    if not args.db.exists():
        print(f"no database at {args.db}: run bench/bench_predictor.py first", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start_server(args.db, port, data_dir)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/v1/predictors")
            ready = [p for p in json.loads(conn.getresponse().read()) if p["state"] == "ready"]
            if not ready:
                print(f"{args.db} holds no ready predictor: run bench/bench_predictor.py first", file=sys.stderr)
                return 2
            target = {"device_class": ready[-1]["device_class"], "runtime": ready[-1]["runtime"]}
            singles = [json.dumps({**target, "blocks": [c.model_dump()]}).encode() for c in sample_configs(400, 7)]
            for body in singles[:50]:
                post(conn, "/v1/predict", body)  # warm the cache of the latest version
            rate = single_block_rate(port, singles, seconds=args.seconds)
            batch = json.dumps({**target, "blocks": [c.model_dump() for c in sample_configs(10_000, 11)]}).encode()
            times = batch_times(port, batch)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = {"single_block": rate, "batch_10000_ms": {"cold": times[0], "warm_median": statistics.median(times[1:]),
                                                    "all": times},
           "targets": {"single_per_s_min": 1000, "batch_10000_ms_max": 100}, "cpus": os.cpu_count(),
           "load_avg": os.getloadavg()}
    print(f"single-block predictions: {rate['per_s']:.0f}/s with 4 clients (p50 {rate['p50_ms']:.2f} ms, "
          f"p99 {rate['p99_ms']:.2f} ms)")
    print(f"10,000-block batch: cold {times[0]:.0f} ms, warm median {out['batch_10000_ms']['warm_median']:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/serving.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
