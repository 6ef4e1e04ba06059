"""Benchmark: network-level latency on held-out networks, corrected vs the plain sum of blocks.

On this CPU (onnxruntime, 1 thread), through the real server app (``runs/bench-network/``):

1. networks: ``--derived`` networks derived from the demo supernet (random paths and widths) and
   ``--chains`` chains of 4-12 blocks (``bench_chains.random_chain``), each exported whole and
   measured in ``--passes`` passes (its label: the lowest p10, as the server labels a network);
2. blocks: ``--blocks`` configs of the demo supernet's space at ``--size`` and the blocks of
   ``--chain-blocks`` further random chains, none of them a network of this run, each measured
   alone, stored through a campaign and the agent protocol; the predictor is fitted on them
   (``POST /v1/predictors``);
3. half of each family (by content hash) is uploaded with its block list and its measurements
   (``POST /v1/networks`` with ``blocks``, then lease and report): the server refits the version's
   network-level correction on them; the other half is held out: never uploaded, predicted with
   ``POST /v1/predict`` and ``"network": true`` and compared with its measurement.

``--clock thread-cpu`` times blocks and whole networks by the measuring thread's CPU time (with one
intra-op thread onnxruntime computes on the calling thread: equal to wall time on a quiet machine,
blind to the other processes of a shared one); ``wall`` (the default) by wall time. The statistic
is p10 on both sides. Per held-out network it prints the measurement, the sum of its blocks
measured alone (never shown to the server: it separates the block predictor's error from what only
the whole network runs), the predicted sum, the corrected total and the network's features; then
the share within ±10 % and the MAPE of the corrected total next to the plain sum, per family and
overall, and writes ``runs/bench/network.json``; the last line says MET when the corrected total
lands within ±10 % on at least ``--target-share`` of the held-out networks (exit 1 otherwise) and
names the clock and seed. Measurements are cached per clock in ``runs/bench-network/measured.jsonl``
(wall) or ``measured-thread-cpu.jsonl`` (a rerun resumes; another ``--seed`` draws other networks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_chains import random_chain  # noqa: E402
from bench_predictor import ADMIN_TOKEN, measure_block, measure_onnx, open_farm, store_through_server  # noqa: E402

from profiler_server.predictor import accuracy as M  # noqa: E402
from search_client.models import build_model  # noqa: E402
from search_client.pipeline.demo import DEMO_SUPERNET  # noqa: E402
from search_client.pipeline.measuring import export_input, export_onnx  # noqa: E402
from search_client.pipeline.space import supernet_space  # noqa: E402
from search_client.search.derive import derive  # noqa: E402
from search_client.search.latency import network_blocks  # noqa: E402
from shared.blocks import example_inputs  # noqa: E402
from shared.config import AnyBlock  # noqa: E402
from shared.export import export_module_onnx, seeded_block  # noqa: E402
from shared.network_correction import aggregate_features  # noqa: E402
from shared.space import sample_stratified  # noqa: E402

RUN_DIR = Path("runs/bench-network")
CACHE = RUN_DIR / "measured.jsonl"
DEVICE_CLASS = "host/bench-network"
RUNTIME = "onnxruntime/t1/cpu"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Cache:
    """Measurements by (what, content key): a rerun measures only what is missing."""

    def __init__(self, path: Path = CACHE) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        self.rows = {r["id"]: r["stats"] for r in rows}

    def get(self, key: str, measure) -> dict:  # noqa: ANN001 - a thunk
        if key not in self.rows:
            self.rows[key] = measure()
            with self.path.open("a") as fh:
                fh.write(json.dumps({"id": key, "stats": self.rows[key]}) + "\n")
        return self.rows[key]


def derived_networks(n: int, size: tuple[int, int], seed: int) -> list[tuple[nn.Module, list[AnyBlock]]]:
    """Random subnets of the demo supernet (a path per mixed block, a width per gate), derived."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        supernet = build_model("supernet", 19, config=DEMO_SUPERNET)
        supernet.install_gates()
        supernet.sample_active(rng, widths=True)
        net = derive(supernet).eval()
        out.append((net, network_blocks(net, *size)))
    return out


def measure_derived(net: nn.Module, size: tuple[int, int], clock: str) -> dict:
    x = export_input(size)
    return measure_onnx(export_onnx(net, x), (x,), clock=clock)


def measure_chain(chain: list[AnyBlock], clock: str) -> dict:
    net = nn.Sequential(*[seeded_block(cfg) for cfg in chain]).eval()
    inputs = example_inputs(chain[0])
    return measure_onnx(export_module_onnx(net, inputs), inputs, clock=clock)


def blocks_key(blocks: list[AnyBlock]) -> str:
    return hashlib.sha256("-".join(b.key() for b in blocks).encode()).hexdigest()[:16]


def fit_block_predictor(client, cache: Cache, configs: list[AnyBlock], clock: str) -> dict:  # noqa: ANN001
    rows = [{"key": c.key(), "config": c.model_dump(), **measured_block(cache, c, clock)} for c in configs]
    store_through_server(client, rows, DEVICE_CLASS, RUNTIME, remeasure=0.0)
    deadline = time.monotonic() + 900  # the campaign's completion queued the fit
    while time.monotonic() < deadline:
        versions = client.get("/v1/predictors", params={"device_class": DEVICE_CLASS}).json()
        if any(v["state"] == "ready" for v in versions):
            return max((v for v in versions if v["state"] == "ready"), key=lambda v: v["version"])
        if versions and all(v["state"] == "failed" for v in versions):
            raise RuntimeError(f"the predictor fit failed: {versions[-1]['error']}")
        time.sleep(1)
    raise TimeoutError("no predictor fitted within 900 s")


def measured_block(cache: Cache, cfg: AnyBlock, clock: str) -> dict:
    return cache.get(f"block:{cfg.key()}", lambda: measure_block(cfg, clock))


def upload_measured(client, networks: list[dict], passes: int) -> None:  # noqa: ANN001
    """Each training network uploaded with its block list; each pass's measurement reported as its job."""
    team = {"Authorization": "Bearer " + client.post("/v1/teams", json={"name": f"net-{time.time_ns()}"},
                                                     headers=ADMIN).json()["token"]}
    agent = {"Authorization": "Bearer " + client.post("/v1/tokens", json={"role": "agent", "name": "net"},
                                                      headers=ADMIN).json()["token"]}
    devices = [{"serial": "host-net", "device_class": DEVICE_CLASS, "kind": "host"}]
    agent_id = client.post("/v1/agents", json={"name": "net", "devices": devices}, headers=agent).json()["agent_id"]
    for net in networks:
        for p in range(passes):
            data = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "name": net["id"], "repeat": str(p > 0).lower(),
                    "blocks": json.dumps([b.model_dump() for b in net["blocks"]])}
            r = client.post("/v1/networks", files={"file": ("net.onnx", net["onnx"])}, data=data, headers=team)
            r.raise_for_status()
            job = client.post("/v1/jobs/lease", json={"agent_id": agent_id, "serial": "host-net"},
                              headers=agent).json()["job"]
            stats = {k: v for k, v in net["passes"][p].items() if k != "samples_ms"}
            client.post(f"/v1/jobs/{job['job_id']}/result", headers=agent,
                        json={"lease_id": job["lease_id"], "serial": "host-net", "stats": stats}).raise_for_status()


def held_out(key: str) -> bool:
    return int(key, 16) % 2 == 0


def report(rows: list[dict], what: str) -> dict:
    measured = np.array([r["measured_ms"] for r in rows])
    out = {"n": len(rows)}
    for name in ("sum_ms", "network_ms"):
        pred = np.array([r[name] for r in rows])
        out[name] = {"mape": M.mape(pred, measured), "within_10": M.within(pred, measured, 0.10),
                     "within_5": M.within(pred, measured, 0.05)}
    print(f"{what:<9} {len(rows):3d} held-out networks: plain sum MAPE {out['sum_ms']['mape']:6.2f} %, "
          f"within ±10 % {out['sum_ms']['within_10']:.3f} | corrected MAPE {out['network_ms']['mape']:6.2f} %, "
          f"within ±10 % {out['network_ms']['within_10']:.3f}")
    return out


def cache_path(clock: str) -> Path:
    """Wall-clock and thread-CPU measurements are kept apart (a rerun resumes the same clock)."""
    return CACHE if clock == "wall" else RUN_DIR / f"measured-{clock}.jsonl"


def build_networks(args: argparse.Namespace, cache: Cache) -> list[dict]:
    """The derived networks and chains, each exported whole and measured ``--passes`` times."""
    size = tuple(args.size)
    chains = [random_chain(random.Random(args.seed * 1000 + i)) for i in range(args.chains)]
    networks = []
    items = [("derived", net, bl) for net, bl in derived_networks(args.derived, size, args.seed)]
    items += [("chains", None, ch) for ch in chains]
    for family, net, blocks in items:
        key = blocks_key(blocks)
        module = net if net is not None else nn.Sequential(*[seeded_block(c) for c in blocks]).eval()
        inputs = (export_input(size),) if net is not None else example_inputs(blocks[0])
        measure = ((lambda n=net: measure_derived(n, size, args.clock)) if net is not None
                   else (lambda b=blocks: measure_chain(b, args.clock)))
        passes = [cache.get(f"{family}:{key}:{p}", measure) for p in range(args.passes)]
        networks.append({"id": key, "family": family, "blocks": blocks, "passes": passes,
                         "onnx": export_module_onnx(module, inputs),
                         "measured_ms": min(p["p10_ms"] for p in passes)})
    return networks


def predict_held_out(client, test: list[dict], cache: Cache, clock: str) -> list[dict]:  # noqa: ANN001
    """Each held-out network's corrected total and sum from the server, with what explains a miss:
    its network-level features and the sum of its blocks *measured* alone (never shown to the
    server: it separates the block predictor's error from what only the whole network runs)."""
    rows = []
    for net in test:
        body = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "network": True,
                "blocks": [b.model_dump() for b in net["blocks"]]}
        answer = client.post("/v1/predict", json=body).json()
        lone = sum(measured_block(cache, b, clock)["p10_ms"] for b in net["blocks"])
        rows.append({"id": net["id"], "family": net["family"], "blocks": len(net["blocks"]),
                     "measured_ms": net["measured_ms"], "sum_ms": answer["total_ms"],
                     "network_ms": answer["network_ms"], "measured_block_sum_ms": lone,
                     "features": aggregate_features(answer["total_ms"], net["blocks"])})
    return rows


def print_misses(rows: list[dict]) -> None:
    """Per held-out network, worst corrected miss first: where the corrected total misses and why."""
    print(f"{'network':<16} {'family':<7} {'blk':>3} {'measured':>8} {'lone sum':>8} {'pred sum':>8} "
          f"{'corrected':>9} {'miss':>7}  features")
    for r in sorted(rows, key=lambda r: -abs(r["network_ms"] / r["measured_ms"] - 1)):
        f = {k: round(v, 3) for k, v in r["features"].items() if k not in ("sum_ms", "const")}
        print(f"{r['id']:<16} {r['family']:<7} {r['blocks']:3d} {r['measured_ms']:8.3f} "
              f"{r['measured_block_sum_ms']:8.3f} {r['sum_ms']:8.3f} {r['network_ms']:9.3f} "
              f"{100 * (r['network_ms'] / r['measured_ms'] - 1):+6.1f}%  {f}")


def predictor_blocks(args: argparse.Namespace, space, networks: list[dict]) -> list[AnyBlock]:  # noqa: ANN001
    """What the block predictor learns: ``--blocks`` samples of the demo supernet's space (the derived
    networks' distribution) and the blocks of ``--chain-blocks`` further random chains (the chains'
    distribution), none of them a network of this run. No network's own block list goes there, so a
    training network's blocks are predicted as a held-out network's are: the correction learns what
    the sum misses on networks the predictor has not seen, which is what it is judged on. A block of
    a held-out network that such a chain happens to draw is left out."""
    held = {b.key() for n in networks if held_out(n["id"]) for b in n["blocks"]}
    extra = [b for i in range(args.chain_blocks) for b in random_chain(random.Random(f"blocks-{args.seed}-{i}"))
             if b.key() not in held]
    return list({c.key(): c for c in [*sample_stratified(space, args.blocks, args.seed), *extra]}.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=200, help="configs of the demo supernet's space")
    ap.add_argument("--derived", type=int, default=24, help="networks derived from the demo supernet")
    ap.add_argument("--chains", type=int, default=24, help="chains of 4-12 blocks")
    ap.add_argument("--chain-blocks", type=int, default=40,
                    help="further random chains whose blocks (measured alone) the block predictor learns")
    ap.add_argument("--passes", type=int, default=2, help="measurements per network (label: the lowest p10)")
    ap.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=("wall", "thread-cpu"), default="wall",
                    help="how blocks and whole networks are timed: wall, or the measuring thread's CPU time "
                         "(onnxruntime with 1 thread computes on it; other processes of a shared machine "
                         "do not count)")
    ap.add_argument("--target-share", type=float, default=0.9, help="held-out share that must be within ±10 %%")
    args = ap.parse_args(argv)
    t0, size, cache = time.monotonic(), tuple(args.size), Cache(cache_path(args.clock))
    space = supernet_space(build_model("supernet", 19, config=DEMO_SUPERNET), [size])
    networks = build_networks(args, cache)
    block_configs = predictor_blocks(args, space, networks)
    print(f"measured {len(networks)} networks ({args.passes} passes, clock {args.clock}) in "
          f"{time.monotonic() - t0:.0f} s", flush=True)
    for stale in (RUN_DIR / "profiler.db", RUN_DIR / "profiler.db-wal", RUN_DIR / "profiler.db-shm"):
        stale.unlink(missing_ok=True)  # a fresh farm each run; measurements come from the cache
    with open_farm(RUN_DIR) as client:
        predictor = fit_block_predictor(client, cache, block_configs, args.clock)
        print(f"predictor v{predictor['version']} on {len(block_configs)} blocks: held-out block MAPE "
              f"{predictor['metrics']['mape']:.2f} % ({time.monotonic() - t0:.0f} s)", flush=True)
        train = [n for n in networks if not held_out(n["id"])]
        test = [n for n in networks if held_out(n["id"])]
        upload_measured(client, train, args.passes)
        correction = client.get(f"/v1/predictors/{predictor['id']}/network-correction").json()
        rows = predict_held_out(client, test, cache, args.clock)
    out = {"device_class": DEVICE_CLASS, "runtime": RUNTIME, "size": list(size), "statistic": "p10_ms",
           "clock": args.clock, "seed": args.seed, "passes": args.passes, "n_blocks": len(block_configs),
           "block_mape": predictor["metrics"]["mape"], "n_train_networks": len(train), "correction": correction,
           "held_out": rows, "load_avg": os.getloadavg(), "seconds": time.monotonic() - t0,
           "target_share_within_10": args.target_share}
    print_misses(rows)
    print(f"correction: {correction['model']} on {correction['n_networks']} networks, coefficients "
          f"{ {k: round(v, 4) for k, v in correction['coef'].items()} }; leave-one-out MAPE "
          + ", ".join(f"{k} {v['mape']:.2f} %" for k, v in correction["heldout"].items()))
    for family in ("derived", "chains"):
        out[family] = report([r for r in rows if r["family"] == family], family)
    out["all"] = report(rows, "all")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/network.json").write_text(json.dumps(out, indent=1))
    share = out["all"]["network_ms"]["within_10"]
    met = share >= args.target_share
    print(f"load average {out['load_avg'][0]:.2f}; {out['seconds']:.0f} s; wrote runs/bench/network.json")
    print(f"{'MET' if met else 'NOT MET'}: corrected total within ±10 % on {100 * share:.1f} % of {len(rows)} held-out "
          f"networks (target {100 * args.target_share:.0f} %; plain sum {100 * out['all']['sum_ms']['within_10']:.1f} %; "
          f"clock {args.clock}, seed {args.seed})")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
