"""Benchmark: fit the latency predictor on >= 2,000 blocks measured on this CPU and judge it.

Phases (each resumable; measurements are appended to ``runs/bench-predictor/measured.jsonl``):
  1. sample block configs across every kind and measure each with onnxruntime (1 thread);
     a fraction is measured twice so the noise floor is known;
  2. ``second-pass``: measure the held-out (test and validation) configs once more, in a later
     session, so that a slow burst of this shared CPU during one session does not set their label
     (the server labels a config with its least disturbed session);
  3. store them through the server's code path into ``runs/bench-predictor/profiler.db``
     (a config already stored gets its new measurement through a ``refresh`` campaign);
  4. fit the 5-layer MLP and its peers on a held-out split; adaptive vs uniform sampling.
Prints the figures and writes ``runs/bench/predictor.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from android_harness.host import sample_clock
from android_harness.runner import MeasureOptions
from profiler_server.predictor import accuracy as M
from profiler_server.predictor.adaptive import near_worst, worst_first
from profiler_server.predictor.fit import TrainSettings, fit_predictor, split_by_key
from shared.blocks import example_inputs
from shared.config import AnyBlock, parse_block
from shared.costs import block_macs
from shared.encoding import encode_blocks
from shared.export import export_block_onnx

RUN_DIR = Path("runs/bench-predictor")
MEASURED = RUN_DIR / "measured.jsonl"
MAX_MACS = 150e6  # keeps one config at ~0.1-0.3 s (export + 10 warm-ups + >= 50 runs)
MIN_MACS = 2e5
CH = (8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256)
SIZES = (8, 16, 24, 32, 48, 64, 96, 128)


def _ch(rng: random.Random) -> int:
    return rng.choice(CH)


def _hw(rng: random.Random, mult: int = 1) -> tuple[int, int]:
    h = rng.choice([s for s in SIZES if s % mult == 0])
    w = rng.choice([s for s in SIZES if s % mult == 0 and s >= h])
    return h, w


def _draw(kind: str, rng: random.Random) -> dict:
    h, w = _hw(rng, 4 if kind == "bga" else 1)
    if kind == "conv":
        return dict(kind=kind, cin=_ch(rng), cout=_ch(rng), kernel=rng.choice((1, 3, 3, 5)),
                    stride=rng.choice((1, 2)), h=h, w=w)
    if kind == "lir":
        cin = _ch(rng)
        return dict(kind=kind, cin=cin, clead=rng.choice((cin, _ch(rng))), cmid=cin * rng.choice((2, 3, 4, 6)),
                    cout=rng.choice((cin, _ch(rng))), kernel=rng.choice((3, 5)), stride=rng.choice((1, 1, 2)),
                    h=h, w=w)
    if kind == "down":
        cin = _ch(rng)
        return dict(kind=kind, cin=cin, clead=rng.choice((cin, _ch(rng))), cmid=_ch(rng) * rng.choice((1, 2, 4)),
                    cout=_ch(rng), h=h, w=w)
    if kind == "mhsa":
        heads = rng.choice((1, 2, 4))
        patch = rng.choice([p for p in (1, 2, 4, 8) if h % p == 0 and w % p == 0 and h * w // (p * p) <= 512])
        cin = heads * rng.choice((8, 16, 24, 32))
        return dict(kind=kind, cin=cin, heads=heads, patch=patch, cmid=cin * rng.choice((1, 2, 4)), h=h, w=w)
    if kind == "stem":
        return dict(kind=kind, cin=3, cout=rng.choice((8, 16, 24, 32, 48)), h=h * 2, w=w * 2)
    if kind == "context":
        return dict(kind=kind, cin=_ch(rng), h=h, w=w)
    if kind == "bga":
        return dict(kind=kind, cin=_ch(rng), h=h, w=w)
    return dict(kind="head", cin=_ch(rng), cmid=_ch(rng), classes=rng.choice((2, 11, 19, 21, 32)),
                scale=rng.choice((1, 2, 4, 8)), h=h, w=w)


KIND_WEIGHTS = {"conv": 3, "lir": 4, "down": 3, "mhsa": 3, "stem": 1, "context": 1, "bga": 1, "head": 2}


def sample_configs(n: int, seed: int) -> list[AnyBlock]:
    """``n`` distinct valid configs within the MACs window, kinds weighted by how varied they are."""
    rng = random.Random(seed)
    kinds, weights = zip(*KIND_WEIGHTS.items(), strict=True)
    out: dict[str, AnyBlock] = {}
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        try:
            cfg = parse_block(_draw(kind, rng))
        except (ValueError, IndexError):
            continue
        if MIN_MACS <= block_macs(cfg) <= MAX_MACS:
            out.setdefault(cfg.key(), cfg)
    return list(out.values())


GRAPH_OPTIMIZATION = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                      "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                      "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def _session(model: bytes, optimization: str = "all") -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = GRAPH_OPTIMIZATION[optimization]
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def measure_onnx(model: bytes, feeds_from: tuple, warmup: int = 10, runs: int = 50, min_s: float = 0.05,
                 clock: str = "wall", optimization: str = "all") -> dict:
    """Median/mean/p10/p90 of per-run times (ms) of one ONNX model on this CPU, 1 thread. ``clock``:
    ``wall``, or ``thread-cpu`` (the calling thread's CPU time: with one intra-op thread onnxruntime
    computes on the calling thread, so it equals wall time on a quiet machine and leaves out the
    time other processes of a shared machine take the core away); ``optimization``: onnxruntime's
    graph optimizations (``all``, ``basic`` or ``off``)."""
    _, now_ns = sample_clock(MeasureOptions(clock=clock))
    sess = _session(model, optimization)
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), feeds_from, strict=True)}
    for _ in range(warmup):
        sess.run(None, feeds)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - start < min_s and len(samples) < 10 * runs):
        t0 = now_ns()
        sess.run(None, feeds)
        samples.append((now_ns() - t0) / 1e6)
    qs = statistics.quantiles(samples, n=10)
    return {"median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples), "p10_ms": qs[0],
            "p90_ms": qs[-1], "std_ms": statistics.pstdev(samples), "runs": len(samples), "warmup": warmup,
            "samples_ms": [round(s, 5) for s in samples], "tool": "onnxruntime", "tool_version": ort.__version__,
            "flags": ["intra_op=1", "inter_op=1", "sequential", f"opt={optimization}", f"clock={clock}"]}


def measure_block(cfg: AnyBlock, clock: str = "wall") -> dict:
    return measure_onnx(export_block_onnx(cfg), example_inputs(cfg), clock=clock)


def load_measured(path: Path = MEASURED) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def measure_all(cfgs: list[AnyBlock], remeasure_every: int = 20, path: Path = MEASURED,
                tag: str = "uniform") -> list[dict]:
    """Measure every config not yet in ``path`` (resumable); every ``remeasure_every``-th twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in load_measured(path)}
    todo = [c for c in cfgs if c.key() not in done]
    t0 = time.time()
    with path.open("a") as fh:
        for i, cfg in enumerate(todo):
            repeats = 2 if i % remeasure_every == 0 else 1
            for rep in range(repeats):
                stats = measure_block(cfg)
                row = {"key": cfg.key(), "config": cfg.model_dump(), "rep": rep, "tag": tag, **stats}
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            if i % 100 == 0:
                print(f"measured {i}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
    return load_measured(path)


def second_pass(rows: list[dict], path: Path = MEASURED, seed: int = 0) -> list[dict]:
    """Measure every held-out config (the server's test and validation splits) once more, in a
    shuffled order, appending ``session: 2`` rows; resumable."""
    first = {r["key"]: r["config"] for r in rows if r.get("session", 1) == 1}
    done = {r["key"] for r in rows if r.get("session", 1) == 2}
    keys = sorted(first)
    split = split_by_key(keys, seed)
    todo = [keys[i] for i in np.concatenate([split.test, split.val]) if keys[i] not in done]
    random.Random(seed).shuffle(todo)
    t0 = time.time()
    with path.open("a") as fh:
        for i, key in enumerate(todo):
            cfg = parse_block(first[key])
            row = {"key": key, "config": cfg.model_dump(), "rep": 0, "session": 2, "tag": "uniform",
                   **measure_block(cfg)}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            if i % 200 == 0:
                print(f"second pass {i}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
    return load_measured(path)


ADMIN_TOKEN = "bench-predictor-admin-token"


def open_farm(run_dir: Path = RUN_DIR):
    """The real server app on ``run_dir/profiler.db`` behind an in-process client."""
    from fastapi.testclient import TestClient

    from profiler_server.app import create_app
    from profiler_server.settings import Settings

    settings = Settings(data_dir=run_dir / "data", db_url=f"sqlite:///{run_dir}/profiler.db",
                        admin_token=ADMIN_TOKEN, max_json_bytes=256 * 1024 * 1024)
    return TestClient(create_app(settings))


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def store_through_server(client, rows: list[dict], device_class: str, runtime: str = "onnxruntime/t1/cpu",
                         remeasure: float = 0.05, refresh: bool = False) -> dict:
    """Campaign of the measured configs -> server exports and queues jobs -> an agent leases each job
    and reports the stats measured for that artifact's config (a second copy of a re-measured
    config gets its second measurement, measured now if there is none yet). ``refresh`` measures
    configs the server already has once more (a new session)."""
    from profiler_server.db import Artifact

    admin = _auth(ADMIN_TOKEN)
    team = _auth(client.post("/v1/teams", json={"name": f"bench-{time.time_ns()}"}, headers=admin).json()["token"])
    agent = _auth(client.post("/v1/tokens", json={"role": "agent", "name": "bench"}, headers=admin).json()["token"])
    serial = "host-bench"
    devices = [{"serial": serial, "device_class": device_class, "kind": "host"}]
    agent_id = client.post("/v1/agents", json={"name": "bench", "devices": devices}, headers=agent).json()["agent_id"]
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    configs = [v[0]["config"] for v in by_key.values()]
    body = {"device_class": device_class, "runtime": runtime, "configs": configs, "remeasure": remeasure,
            "wait_s": 0, "min_seconds": 0.05, "refresh": refresh}
    r = client.post("/v1/campaigns", json=body, headers=team)
    r.raise_for_status()
    campaign_id = r.json()["id"]
    while client.get(f"/v1/campaigns/{campaign_id}", headers=team).json()["state"] == "exporting":
        time.sleep(1)
    db = client.app.state.db
    used: dict[str, int] = {}
    n, last_beat = 0, time.monotonic()
    while True:
        job = client.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": serial}, headers=agent).json()["job"]
        if job is None:
            break
        with db.transaction() as s:
            config = s.get(Artifact, job["artifact_sha256"]).config
        cfg = parse_block(config)
        i = used.get(cfg.key(), 0)
        used[cfg.key()] = i + 1
        known = by_key.get(cfg.key(), [])
        stats = dict(known[i]) if i < len(known) else measure_block(cfg)
        stats = {k: stats[k] for k in STATS_FIELDS if k in stats}
        res = client.post(f"/v1/jobs/{job['job_id']}/result", headers=agent,
                          json={"lease_id": job["lease_id"], "serial": serial, "stats": stats})
        res.raise_for_status()
        n += 1
        if n % 500 == 0:
            print(f"reported {n} jobs", flush=True)
        if time.monotonic() - last_beat > 10:  # stay online for the reaper (45 s without a heartbeat)
            last_beat = time.monotonic()
            client.post(f"/v1/agents/{agent_id}/heartbeat", json={"agent_id": agent_id, "serials": [serial]},
                        headers=agent)
    return client.get(f"/v1/campaigns/{campaign_id}", headers=team).json()


STATS_FIELDS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "runs", "samples_ms", "warmup", "tool",
                "tool_version", "flags")


STATISTIC = TrainSettings().statistic  # what the server fits (p10_ms)
BENCH_SETTINGS = TrainSettings(max_seconds=240, max_epochs=1500, patience=150)


def wait_for_fit(client, device_class: str, timeout_s: float = 900) -> dict:
    """Poll ``GET /v1/predictors`` until the newest version of ``device_class`` is ready or failed."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = client.get("/v1/predictors", params={"device_class": device_class}).json()
        if rows and rows[-1]["state"] != "fitting":
            return rows[-1]
        time.sleep(2)
    raise TimeoutError(f"no predictor for {device_class} after {timeout_s} s")


def stored_counts(db, device_class: str) -> Counter:
    """How many measurements each config key has on ``device_class`` in the bench database."""
    from sqlalchemy import select

    from profiler_server.db import Artifact, Measurement

    with db.transaction() as s:
        stored = s.scalars(select(Artifact.config_key).join(Measurement, Measurement.artifact_sha256 == Artifact.sha256)
                           .where(Measurement.device_class == device_class))
        return Counter(key.rsplit(":", 1)[0] for key in stored)  # an artifact's key is "<config key>:<format>"


def unstored(rows: list[dict], stored: Counter) -> tuple[list[dict], list[dict]]:
    """The measurements the database lacks: of configs it has never seen, and of configs it has
    (later sessions), judged by how many measurements each config has there."""
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    new = [r for k, rs in by_key.items() if not stored[k] for r in rs]
    again = [r for k, rs in by_key.items() if stored[k] for r in rs[stored[k]:]]
    return new, again


MAX_SESSIONS = 5


def fit_on_server(rows: list[dict], device_class: str) -> dict:
    """Store the measurements (first run) and fit through the server; the predictor it serves."""
    with open_farm() as client:
        client.app.state.predictor.settings = BENCH_SETTINGS
        new, again = unstored(rows, stored_counts(client.app.state.db, device_class))
        refreshed = bool(again)
        for _ in range(MAX_SESSIONS):  # a refresh campaign measures each config once: one round per extra session
            if not again:
                break
            campaign = store_through_server(client, again, device_class, remeasure=0.0, refresh=True)
            print(f"refresh campaign {campaign['id']}: {campaign['n']} configs", flush=True)
            _, again = unstored(rows, stored_counts(client.app.state.db, device_class))
        if new:  # measured since the last run: store them (the campaign's completion fires the fit hook)
            campaign = store_through_server(client, new, device_class)
            print(f"campaign {campaign['id']}: {campaign['n']} configs", flush=True)
        if not (new or refreshed):  # nothing new: fit again on what is stored (a campaign's completion fits)
            r = client.post("/v1/predictors", json={"device_class": device_class, "runtime": "onnxruntime"},
                            headers=_auth(ADMIN_TOKEN))
            r.raise_for_status()
        time.sleep(3)
        return wait_for_fit(client, device_class)


def print_table(pred: dict) -> None:
    m = pred["metrics"]
    print(f"predictor {pred['id']} v{pred['version']} {pred['device_class']} {pred['runtime']}: "
          f"n_train={m['n_train']} n_test={m['n_test']} noise floor {m['noise_floor']}")
    print(f"{'model':<16}{'MAPE %':>9}{'within10':>10}{'within5':>9}")
    print(f"{'mlp':<16}{m['mape']:>9.2f}{m['within_10']:>10.3f}{m['within_5']:>9.3f}")
    for name, p in m["peers"].items():
        print(f"{name:<16}{p['mape']:>9.2f}{p['within_10']:>10.3f}{p['within_5']:>9.3f}")


ADAPTIVE_SETTINGS = TrainSettings(max_seconds=600, max_epochs=400, patience=60)  # epochs, not time, bound it


def _fit_eval(train_rows: list[dict], test: tuple[list, np.ndarray]) -> tuple[dict, object]:
    result = fit_predictor([r["config"] for r in train_rows], [r[STATISTIC] for r in train_rows],
                           seed=1, settings=ADAPTIVE_SETTINGS, with_peers=False)  # seed 0 split = the test set
    with torch.no_grad():
        pred = result.model(encode_blocks(test[0])).double().numpy()
    return M.accuracy_report(pred, test[1]), result


def _near_worst(result, candidates: list[AnyBlock], budget: int) -> list[AnyBlock]:
    """nn-Meter-style resampling as the server's ``adaptive`` campaigns do it: the candidates nearest
    to the configs the first fit got most wrong on its own held-out split (> 10 %, worst first)."""
    idx = np.concatenate([result.split.val, result.split.test])
    with torch.no_grad():
        err = np.abs(result.model(result.data.x[idx]).double().numpy() / result.data.y_ms[idx] - 1)
    worst = idx[worst_first(err)]
    picks = near_worst(result.data.x[worst].numpy(), encode_blocks(candidates).numpy(), budget)
    return [candidates[i] for i in picks]


def _most_disputed(first_rows: list[dict], candidates: list[AnyBlock], budget: int, k: int = 4) -> list[AnyBlock]:
    """Query by committee: ``k`` MLPs fitted on the first configs, each on its own train/validation
    split, predict every candidate; the ``budget`` candidates they disagree on most (spread of log
    latency) are where the model, not the label, is least sure. Uses no candidate's measurement."""
    x = encode_blocks(candidates)
    logs = []
    for seed in range(1, k + 1):
        fit = fit_predictor([r["config"] for r in first_rows], [r[STATISTIC] for r in first_rows], seed=seed,
                            settings=ADAPTIVE_SETTINGS, with_peers=False)
        with torch.no_grad():
            logs.append(torch.log(fit.model(x)).double().numpy())
    spread = np.std(np.array(logs), axis=0)
    return [candidates[i] for i in np.argsort(-spread)[:budget]]


def adaptive_experiment(rows: list[dict], initial: int = 500, budget: int = 300, seed: int = 0) -> dict:
    """Same measuring budget, three ways to spend it: ``budget`` more uniform samples, ``budget``
    samples near the worst errors of a first fit (nn-Meter), and the ``budget`` samples a committee
    of first fits disagrees on most, all drawn from one candidate pool measured in the same session
    (measurements taken at another time of this shared CPU drift by several percent, which would
    confound the comparison). Choosing uses only the candidates' features. Every arm is judged on
    one fixed held-out test set, labelled in the same first session; ``seed`` shuffles the pool."""
    by_key = {r["key"]: r for r in rows if r.get("rep", 0) == 0 and r.get("session", 1) == 1}
    keys = sorted(by_key)
    split = split_by_key(keys, seed=0)
    test_rows = [by_key[keys[i]] for i in split.test]
    test = ([parse_block(r["config"]) for r in test_rows], np.array([r[STATISTIC] for r in test_rows]))
    pool = [by_key[keys[i]] for i in np.concatenate([split.train, split.val])]
    random.Random(seed).shuffle(pool)
    first, candidates = pool[:initial], pool[initial:]
    first_report, first_fit = _fit_eval(first, test)
    cand_cfgs = [parse_block(r["config"]) for r in candidates]
    picks = {"uniform": candidates[:budget]}  # the pool is shuffled: a uniform draw
    for arm, chosen in (("near_worst", _near_worst(first_fit, cand_cfgs, budget)),
                        ("committee", _most_disputed(first, cand_cfgs, budget))):
        keys_chosen = {c.key() for c in chosen}
        picks[arm] = [r for r in candidates if r["key"] in keys_chosen]
    out = {"initial": initial, "budget": budget, "seed": seed, "n_test": len(test_rows), "first_fit": first_report}
    for arm, extra in picks.items():
        out[arm], _ = _fit_eval(first + extra, test)
    out["committee_kinds"] = {k: sum(parse_block(r["config"]).kind == k for r in picks["committee"]) for k in KIND_WEIGHTS}
    return out


ADAPTIVE_RUNS = ((1000, 1000, 0), (1000, 1000, 1), (1000, 1000, 2), (2000, 1500, 0))
ARMS = ("uniform", "near_worst", "committee")


def between_sessions(rows: list[dict], n: int = 150, seed: int = 2) -> dict:
    """The noise ceiling of this machine: ``n`` stored configs measured again now (minutes to hours
    after their first measurement). Per statistic, how often the two sessions agree within 5/10 %.
    A predictor cannot agree with a test split more often than the device agrees with itself."""
    picks = [r for r in rows if r.get("rep", 0) == 0]
    random.Random(seed).shuffle(picks)
    stats = ("median_ms", "p10_ms", "min_ms")
    diffs: dict[str, list[float]] = {k: [] for k in stats}
    for r in picks[:n]:
        m = measure_block(parse_block(r["config"]))
        for k in stats:
            new, old = (min(m["samples_ms"]), min(r["samples_ms"])) if k == "min_ms" else (m[k], r[k])
            diffs[k].append(abs(new / old - 1))
    out = {}
    for k, d in diffs.items():
        a = np.array(d)
        out[k] = {"median_pct": float(np.median(a) * 100), "p90_pct": float(np.percentile(a, 90) * 100),
                  "within_10": float((a <= 0.10).mean()), "within_5": float((a <= 0.05).mean())}
    return {"n": len(diffs["median_ms"]), "by_statistic": out}


def fit_on_statistic(rows: list[dict], statistic: str) -> dict:
    """The same MLP recipe fitted on another per-config statistic (same split) than the server's
    default p10 (the low percentile is what shared-CPU interference, which only adds time, disturbs least)."""
    result = fit_predictor([r["config"] for r in rows], [r[statistic] for r in rows], seed=0,
                           settings=BENCH_SETTINGS, with_peers=True)
    m = result.metrics
    return {"statistic": statistic, "mape": m["mape"], "within_10": m["within_10"], "within_5": m["within_5"],
            "n_train": m["n_train"], "n_test": m["n_test"],
            "peers": {k: {"mape": v["mape"], "within_10": v["within_10"]} for k, v in m["peers"].items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("phase", choices=["measure", "second-pass", "fit", "adaptive", "all"], nargs="?", default="all")
    ap.add_argument("--n", type=int, default=2200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from android_harness.host import host_device_class

    device_class = host_device_class()
    if args.phase in ("measure", "all"):
        measure_all(sample_configs(args.n, args.seed))
    if args.phase in ("second-pass", "all"):
        second_pass(load_measured())
    if args.phase in ("measure", "second-pass"):
        return 0
    rows = [r for r in load_measured() if r.get("tag", "uniform") == "uniform"]
    if args.phase == "adaptive":
        # a first fit on `initial` configs, then `budget` more: uniform, near its worst errors, or disputed
        runs = {f"{ini}+{bud} seed {seed}": adaptive_experiment(rows, initial=ini, budget=bud, seed=seed)
                for ini, bud, seed in ADAPTIVE_RUNS}
        for name, r in runs.items():
            print(f"{name}: " + ", ".join(f"{arm} MAPE {r[arm]['mape']:.2f} % within10 {r[arm]['within_10']:.3f}"
                                        for arm in ("first_fit", *ARMS)))
        mean = {arm: {m: float(np.mean([r[arm][m] for r in runs.values()])) for m in ("mape", "within_10")}
                for arm in ARMS}
        print("mean over runs: " + ", ".join(f"{a} MAPE {v['mape']:.2f} % within10 {v['within_10']:.3f}"
                                             for a, v in mean.items()))
        Path("runs/bench").mkdir(parents=True, exist_ok=True)
        Path("runs/bench/predictor_adaptive.json").write_text(json.dumps({"runs": runs, "mean": mean}, indent=1))
        return 0
    pred = fit_on_server(rows, device_class)
    print_table(pred)
    other = fit_on_statistic(rows, "median_ms")
    print(f"same MLP fitted on the median instead of p10: MAPE {other['mape']:.2f} %, within10 "
          f"{other['within_10']:.3f}; peers " + ", ".join(f"{k} {v['mape']:.2f}" for k, v in other["peers"].items()))
    noise = between_sessions(rows)
    print(f"this device against itself, {noise['n']} configs measured again now:")
    for k, v in noise["by_statistic"].items():
        print(f"  {k:<10} median diff {v['median_pct']:.2f} %, within10 {v['within_10']:.3f}, within5 {v['within_5']:.3f}")
    out = {"device_class": device_class, "n_measurements": len(rows), "predictor": pred,
           "targets": {"mape_max": 4.0, "within_10_min": 0.95}, "fit_on_median": other,
           "between_sessions": noise, "db": str(RUN_DIR / "profiler.db")}
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/predictor.json").write_text(json.dumps(out, indent=1))
    m = pred["metrics"]
    met = m["mape"] <= out["targets"]["mape_max"] and m["within_10"] >= out["targets"]["within_10_min"]
    print(f"target MAPE <= {out['targets']['mape_max']:g} % and >= {100 * out['targets']['within_10_min']:.0f} % "
          f"within +-10 %: {'MET' if met else 'NOT MET'} (MAPE {m['mape']:.2f} %, "
          f"{100 * m['within_10']:.1f} % within +-10 %, {m['n_train']} training configs)")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
