"""Benchmark: does the sum of block predictions hold for whole networks?

Builds 30 random chains of 4-12 blocks with consistent shapes (each block's input is the previous
block's output), exports each chain as ONE ONNX model, measures it on this CPU (1 thread), and
compares the measurement with the sum of the served predictor's block predictions (POST /v1/predict
against ``runs/bench-predictor/profiler.db``). Also reports a learned correction
``measured ~ sum * r`` (median ratio of the other chains) judged leave-one-out. Writes ``runs/bench/chains.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_predictor import _draw, measure_onnx, open_farm  # noqa: E402

from profiler_server.predictor import metrics as M  # noqa: E402
from shared.blocks import example_inputs  # noqa: E402
from shared.config import AnyBlock, parse_block  # noqa: E402
from shared.costs import block_macs  # noqa: E402
from shared.export import export_module_onnx, seeded_block  # noqa: E402

CHAIN_KINDS = ("conv", "lir", "down", "mhsa", "context")  # one input, so they chain
MAX_BLOCK_MACS = 60e6


def next_block(c: int, h: int, w: int, rng: random.Random) -> AnyBlock | None:
    kind = rng.choice(CHAIN_KINDS)
    values = {**_draw(kind, rng), "h": h, "w": w}
    if kind == "mhsa":  # within the block sampler's space: head width >= 8, at most 512 tokens
        heads = rng.choice([k for k in (1, 2, 4) if c % k == 0 and c // k >= 8] or [1])
        patches = [p for p in (1, 2, 4, 8) if h % p == 0 and w % p == 0 and h * w // (p * p) <= 512]
        if not patches:
            return None
        patch = rng.choice(patches)
        values.update(cin=c, heads=heads, patch=patch, cmid=c * rng.choice((1, 2)))
    else:
        values["cin"] = c
        if kind == "lir" and rng.random() < 0.5:
            values.update(cout=c, stride=1, cmid=c * rng.choice((2, 4)))
        elif kind == "lir":
            values["cmid"] = c * rng.choice((2, 4))
    if (kind in ("down",) or values.get("stride") == 2) and min(h, w) < 16:
        return None
    try:
        cfg = parse_block(values)
    except ValueError:
        return None
    return cfg if block_macs(cfg) <= MAX_BLOCK_MACS else None


def random_chain(rng: random.Random) -> list[AnyBlock]:
    n = rng.randint(4, 12)
    c, (h, w) = rng.choice((16, 24, 32, 48, 64)), rng.choice(((32, 64), (48, 48), (64, 64), (32, 32)))
    out: list[AnyBlock] = []
    while len(out) < n:
        cfg = next_block(c, h, w, rng)
        if cfg is None:
            continue
        out.append(cfg)
        c, (h, w) = cfg.out_channels, cfg.out_size()
    return out


def measure_chain(chain: list[AnyBlock]) -> dict:
    net = nn.Sequential(*[seeded_block(cfg) for cfg in chain]).eval()
    inputs = example_inputs(chain[0])
    return measure_onnx(export_module_onnx(net, inputs), inputs)


CACHE = Path("runs/bench-predictor/chains.jsonl")


def measure_chains(chains: list[list[AnyBlock]]) -> list[dict]:
    """Median and p10 ms of each chain, resumable: measured chains are kept in ``CACHE`` by content."""
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if CACHE.exists():
        done = {r["id"]: r for r in map(json.loads, CACHE.read_text().splitlines()) if r and "p10_ms" in r}
    out = []
    for chain in chains:
        cid = "-".join(c.key() for c in chain)
        if cid not in done:
            stats = measure_chain(chain)
            done[cid] = {"id": cid, "median_ms": stats["median_ms"], "p10_ms": stats["p10_ms"]}
            with CACHE.open("a") as fh:
                fh.write(json.dumps(done[cid]) + "\n")
        out.append(done[cid])
    return out


def loo_correction(sums: np.ndarray, counts: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Leave-one-out ``measured ~ sum * r``: ``r`` is the median measured/summed ratio of the other
    chains (robust to one odd chain; a least-squares ``a * sum + b * n`` was pulled off by it).
    ``counts`` is kept for the report; a per-block term did not help on these chains."""
    ratio = measured / sums
    keep = ~np.eye(len(measured), dtype=bool)
    return np.array([sums[i] * np.median(ratio[keep[i]]) for i in range(len(measured))])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chains", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-only", action="store_true", help="measure the chains, skip predictions")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    chains = [random_chain(rng) for _ in range(args.chains)]
    stats = measure_chains(chains)
    if args.measure_only:
        return 0
    with open_farm() as client:
        ready = [p for p in client.get("/v1/predictors").json() if p["state"] == "ready"]
        if not ready:
            print("no ready predictor in runs/bench-predictor/profiler.db: run bench/bench_predictor.py", file=sys.stderr)
            return 2
        target = {"device_class": ready[-1]["device_class"], "runtime": ready[-1]["runtime"]}
        statistic = ready[-1]["metrics"].get("statistic", "median_ms")  # what the predictor learned
        answers = [client.post("/v1/predict", json={**target, "blocks": [c.model_dump() for c in ch]}).json()
                   for ch in chains]
    measured = np.array([st[statistic] for st in stats])
    sums = np.array([a["total_ms"] for a in answers])
    counts = np.array([len(ch) for ch in chains], dtype=np.float64)
    corrected = loo_correction(sums, counts, measured)
    out = {"n_chains": len(chains), "blocks": counts.tolist(), "measured_ms": measured.tolist(),
           "summed_ms": sums.tolist(), "predictor": answers[0]["predictor"], "statistic": statistic,
           "sum": M.accuracy_report(sums, measured), "corrected_loo": M.accuracy_report(corrected, measured),
           "target_within_10": 0.90}
    print(f"{len(chains)} chains of {int(counts.min())}-{int(counts.max())} blocks, {statistic} measured vs summed:")
    for name in ("sum", "corrected_loo"):
        r = out[name]
        print(f"{name:<14} MAPE {r['mape']:6.2f} %  within ±10 % {r['within_10']:.3f}  within ±5 % {r['within_5']:.3f}")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/chains.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
