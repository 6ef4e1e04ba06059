"""Benchmark: fit the latency predictor on >= 2,000 blocks measured on this CPU and judge it.

Phases (each resumable; measurements are appended to ``runs/bench-predictor/measured.jsonl``):
  1. sample block configs across every kind and measure each with onnxruntime (1 thread);
     a fraction is measured twice so the noise floor is known;
  2. store them through the server's code path into ``runs/bench-predictor/profiler.db``;
  3. fit the 5-layer MLP and its peers on a held-out split; adaptive vs uniform sampling.
Prints the figures and writes ``runs/bench/predictor.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import onnxruntime as ort

from shared.blocks import example_inputs
from shared.config import AnyBlock, parse_block
from shared.costs import block_macs
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
        return dict(kind=kind, cin=cin, cmid=cin * rng.choice((2, 3, 4, 6)), cout=rng.choice((cin, _ch(rng))),
                    kernel=rng.choice((3, 5)), stride=rng.choice((1, 1, 2)), h=h, w=w)
    if kind == "down":
        return dict(kind=kind, cin=_ch(rng), cmid=_ch(rng) * rng.choice((1, 2, 4)), cout=_ch(rng), h=h, w=w)
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


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def measure_onnx(model: bytes, feeds_from: tuple, warmup: int = 10, runs: int = 50, min_s: float = 0.05) -> dict:
    """Median/mean/p10/p90 of per-run wall times (ms) of one ONNX model on this CPU, 1 thread."""
    sess = _session(model)
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), feeds_from, strict=True)}
    for _ in range(warmup):
        sess.run(None, feeds)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - start < min_s and len(samples) < 10 * runs):
        t0 = time.perf_counter_ns()
        sess.run(None, feeds)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    qs = statistics.quantiles(samples, n=10)
    return {"median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples), "p10_ms": qs[0],
            "p90_ms": qs[-1], "std_ms": statistics.pstdev(samples), "runs": len(samples), "warmup": warmup,
            "samples_ms": [round(s, 5) for s in samples], "tool": "onnxruntime", "tool_version": ort.__version__,
            "flags": ["intra_op=1", "inter_op=1", "sequential", "opt=all"]}


def measure_block(cfg: AnyBlock) -> dict:
    return measure_onnx(export_block_onnx(cfg), example_inputs(cfg))


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("phase", choices=["measure", "all"], nargs="?", default="all")
    ap.add_argument("--n", type=int, default=2200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfgs = sample_configs(args.n, args.seed)
    measure_all(cfgs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
