"""Benchmark: does a predictor adapted from another device class beat one trained from scratch?

A lab's next device should not need thousands of fresh measurements. Two device classes on this
CPU that differ in latency profile: ``host`` (onnxruntime with every graph optimization: fused
conv + BN + activation, the NCHWc layout on x86) and ``host-opt-off`` (onnxruntime with graph
optimizations off: every op runs on its own, so memory-bound ops, layer norms and attention cost
relatively more and some big convolutions less; per block the two differ by 0.5-2.2x, not by one
factor). Blocks of the demo's space (as ``bench_learning_curve.py`` draws them).

- The base: the served recipe (``TrainSettings()``) fitted on ``--base-configs`` configs of the
  ``host`` class, measured by ``bench_learning_curve.py`` (``runs/bench-learning-curve/demo.jsonl``).
- The new class: ``--measure`` configs of another draw of the space, measured once here with graph
  optimizations off (p10 of >= 15 runs after 3 warm-ups; resumable, under
  ``runs/bench-learning-curve/``). Per seed a fixed held-out test split (30 % by config hash) is set
  aside and, for each size (50/100/200), a seeded subsample of the rest trains:

  - ``adapted``: the base adapted on the subsample (``adapt_predictor``, see ``adapt.py``: the
    base unchanged or each member's per-kind affine refitted towards the base's, whichever its
    members' pooled out-of-fold error prefers);
  - ``scratch``: the served recipe trained on the subsample alone;
  - ``base``: the base as it is, not adapted (what the new class gets with no measurement);
  - the peers the server reports: ``random_forest``, ``lookup_table``, ``linear_macs``.

Prints MAPE and share within ±10 % per size (mean and range over seeds), writes
``runs/bench/adaptation.json``; the last line says whether adaptation beat training from scratch
(and every peer) at every size (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from profiler_server.predictor import accuracy as M
from profiler_server.predictor.adapt import AdaptSettings, adapt_predictor
from profiler_server.predictor.fit import (
    Split,
    TrainSettings,
    predict_ms,
    prepare_dataset,
    split_by_key,
    train_predictor,
)
from profiler_server.predictor.peers import peer_predictions
from shared.predictor import Predictor

sys.path.insert(0, str(Path(__file__).parent))  # sibling benches (bench/ is not a package)
from bench_learning_curve import RUN_DIR, current, measure, summarize  # noqa: E402
from bench_predictor import load_measured  # noqa: E402

BASE_ROWS = RUN_DIR / "demo.jsonl"
NEW_ROWS = RUN_DIR / "demo-opt-off.jsonl"
OUT = Path("runs/bench/adaptation.json")
SIZES = (50, 100, 200)
PEERS = ("random_forest", "lookup_table", "linear_macs")


def fit_base(rows: list[dict], n: int, seed: int = 0) -> tuple[Predictor, dict]:
    """The served recipe on ``n`` configs of the base class (all of them train: the base's own
    held-out figures are not what this bench judges)."""
    data = prepare_dataset([r["config"] for r in rows], [r["p10_ms"] for r in rows])
    chosen = np.random.default_rng(seed).permutation(len(data.keys))[:n]
    n_val = max(10, len(chosen) // 10)
    split = Split(train=chosen[n_val:], val=chosen[:n_val], test=np.arange(0))
    model, history, _ = train_predictor(data, split, seed, TrainSettings())
    return model, {"n_configs": len(chosen), "train_s": history["seconds"]}


def judge(base: Predictor, rows: list[dict], seeds: list[int], sizes: tuple[int, ...],
          settings: AdaptSettings) -> dict:
    data = prepare_dataset([r["config"] for r in rows], [r["p10_ms"] for r in rows])
    results: dict[str, dict[str, list[dict]]] = {}
    for seed in seeds:
        held = split_by_key(data.keys, seed, test_frac=0.3, val_frac=0.0)
        test, pool = held.test, np.random.default_rng(seed).permutation(held.train)
        truth = data.y_ms[test]
        for size in sizes:
            if size > len(pool):
                print(f"  size {size}: only {len(pool)} training configs measured; skipped", flush=True)
                continue
            chosen = pool[:size]
            n_val = max(5, size // 10)
            split = Split(train=chosen[n_val:], val=chosen[:n_val], test=test)
            preds, seconds = {}, {}
            t0 = time.monotonic()
            adapted, adaptation = adapt_predictor(base, data.x[chosen], data.y_ms[chosen], seed, settings)
            preds["adapted"], seconds["adapted"] = predict_ms(adapted, data.x[test]), time.monotonic() - t0
            model, history, _ = train_predictor(data, split, seed, TrainSettings())
            preds["scratch"], seconds["scratch"] = predict_ms(model, data.x[test]), history["seconds"]
            preds["base"] = predict_ms(base, data.x[test])
            preds.update(peer_predictions(data, split, seed))
            for name, pred in preds.items():
                results.setdefault(str(size), {}).setdefault(name, []).append(
                    {"mape": M.mape(pred, truth), "within_10": M.within(pred, truth, 0.10),
                     "train_s": seconds.get(name), **({"chosen": adaptation["chosen"]} if name == "adapted" else {})})
            line = ", ".join(f"{k} {M.mape(v, truth):.1f}" for k, v in preds.items())
            print(f"  seed {seed} size {size} (test {len(test)}): MAPE % {line}; adapted ({adaptation['chosen']}) in "
                  f"{seconds['adapted']:.0f} s, scratch in {seconds['scratch']:.0f} s", flush=True)
    return results


def print_table(table: dict) -> None:
    names = ("adapted", "scratch", "base", *PEERS)
    print("\nnew device class (graph optimizations off): test MAPE %, mean [min-max] over seeds "
          "(within ±10 % in parentheses)")
    print("size " + "".join(f"{n:>24}" for n in names))
    for size, row in table.items():
        cells = [f"{row[n]['mape_mean']:.1f} [{row[n]['mape_min']:.1f}-{row[n]['mape_max']:.1f}]"
                 f" ({100 * row[n]['within_10_mean']:.0f})" for n in names]
        print(f"{size:>4} " + "".join(f"{c:>24}" for c in cells))


def profile_change(base_rows: list[dict], new_rows: list[dict]) -> dict:
    """Per kind, the new class's p10 over the base class's on the configs both measured: how far
    apart the two classes are (``base`` shows the same from the predictor's side)."""
    base = {r["key"]: r["p10_ms"] for r in base_rows}
    ratios: dict[str, list[float]] = {}
    for r in new_rows:
        if r["key"] in base:
            ratios.setdefault(r["config"]["kind"], []).append(r["p10_ms"] / base[r["key"]])
    return {k: {"n": len(v), "median": statistics.median(v), "min": min(v), "max": max(v)}
            for k, v in sorted(ratios.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--measure", type=int, default=500, help="configs of the new class to measure (once; resumable)")
    ap.add_argument("--measure-only", action="store_true", help="measure the new class and stop")
    ap.add_argument("--base-configs", type=int, default=1600, help="host configs the base predictor trains on")
    args = ap.parse_args(argv)
    new_rows = measure("demo", args.measure, NEW_ROWS, optimization="off", seed=1)
    print(f"[new class] {len(new_rows)} measured configs", flush=True)
    if args.measure_only:
        return 0
    base_rows = current(load_measured(BASE_ROWS))
    if len(base_rows) < 200:
        print(f"{BASE_ROWS} holds {len(base_rows)} configs; measure the base class first: "
              "bench/bench_learning_curve.py --spaces demo --measure-only")
        return 2
    base, base_info = fit_base(base_rows, args.base_configs)
    print(f"[base] served recipe on {base_info['n_configs']} host configs in {base_info['train_s']:.0f} s", flush=True)
    settings = AdaptSettings()
    results = judge(base, new_rows, list(range(args.seeds)), tuple(args.sizes), settings)
    table, misses = summarize(results, judged="adapted", rivals=("scratch", *PEERS))
    print_table(table)
    out = {"sizes": args.sizes, "seeds": args.seeds, "statistic": "p10_ms", "base": base_info,
           "n_new_measured": len(new_rows), "adapt_settings": asdict(settings),
           "profile_change": profile_change(base_rows, new_rows), "table": table, "runs": results,
           "misses": misses}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {OUT}")
    if misses:
        print("MISSED: adaptation does not beat from-scratch and every peer at every size: " + "; ".join(misses))
        return 1
    print(f"OK: adapted from host beats from-scratch and every peer at every size ({', '.join(map(str, table))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
