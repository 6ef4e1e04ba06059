"""Benchmark: is the served latency predictor right with little data?

For two spaces (``demo``: the blocks of the demo's supernet at its searched size, as the demo's
campaign samples them; ``default``: ``shared.space.default_space()`` at 256x512, blocks of at most
150 M MACs so one measurement stays short), block configs are measured once on this CPU
(onnxruntime, 1 thread, p10 of >= 15 runs after 3 warm-ups; resumable, under
``runs/bench-learning-curve/``). Then, per seed, a fixed held-out test split is set aside (by config
hash, as the server splits) and, for each training size, a seeded subsample of the rest trains:

- ``mlp``: the served recipe (``TrainSettings()``: a k-fold ensemble of MLPs, each a per-kind affine
  on the log costs + MLP correction, Huber loss on log latency), trained on the training configs;
- ``mlp_single``: one such MLP with a squared loss, stopping early on a tenth of the training
  configs (the recipe served before);
- the peers the server reports: ``random_forest``, ``lookup_table``, ``linear_macs``.

Everyone is judged on the same test configs. Prints MAPE and share within ±10 % per size (mean and
range over seeds), writes ``runs/bench/learning_curve.json``; the last line says whether the served
MLP beat every peer at every size (exit 1 if not). With one ``--spaces`` the JSON is
``runs/bench/learning_curve_<space>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from profiler_server.predictor import accuracy as M
from profiler_server.predictor.fit import (
    Dataset,
    Split,
    TrainSettings,
    predict_ms,
    prepare_dataset,
    split_by_key,
    train_predictor,
)
from profiler_server.predictor.peers import peer_predictions
from shared.config import AnyBlock
from shared.costs import block_macs

sys.path.insert(0, str(Path(__file__).parent))  # sibling benches (bench/ is not a package)
from bench_predictor import load_measured, measure_onnx  # noqa: E402

RUN_DIR = Path("runs/bench-learning-curve")
OUT = Path("runs/bench/learning_curve.json")
SIZES = (200, 400, 800, 1600, 3200)
MAX_MACS = 150e6
POOL = 10_000  # configs drawn per space before the MACs filter


def demo_space():
    from search_client.models import build_from_config
    from search_client.pipeline.demo import DEFAULT, demo_settings
    from search_client.pipeline.space import supernet_space

    cfg = demo_settings(DEFAULT, RUN_DIR / "demo-settings").run_config()
    supernet = build_from_config(cfg)
    return supernet_space(supernet, [DEFAULT.latency_size])


def default_space():
    from shared.space import default_space as space

    return space(((256, 512),))


SPACES = {"demo": demo_space, "default": default_space}


def sample(space_name: str, n: int, seed: int = 0) -> list[AnyBlock]:
    from shared.space import sample_uniform

    space = SPACES[space_name]()
    cfgs = [c for c in sample_uniform(space, POOL, seed) if block_macs(c) <= MAX_MACS]
    return cfgs[:n]  # a prefix of one fixed draw: measuring more later extends the same sample


def measure(space_name: str, n: int, path: Path | None = None, optimization: str = "all", seed: int = 0) -> list[dict]:
    """Measure ``n`` configs of the space (draw ``seed``) once each with onnxruntime's graph
    ``optimization`` (resumable); returns every row stored in ``path`` (default: the space's file)."""
    from shared.blocks import example_inputs
    from shared.export import export_block_onnx

    path = path or RUN_DIR / f"{space_name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in current(load_measured(path))}
    todo = [c for c in sample(space_name, n, seed) if c.key() not in done]
    t0 = time.time()
    with path.open("a") as fh:
        for i, cfg in enumerate(todo):
            stats = measure_onnx(export_block_onnx(cfg), example_inputs(cfg), warmup=3, runs=15, min_s=0.01,
                                 optimization=optimization)
            stats.pop("samples_ms")
            fh.write(json.dumps({"key": cfg.key(), "config": cfg.model_dump(), **stats}) + "\n")
            fh.flush()
            if i % 100 == 0:
                print(f"[{path.stem}] measured {i}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
    return current(load_measured(path))


def current(rows: list[dict]) -> list[dict]:
    """Rows measured with the current definition of their block (an older form is another block)."""
    from shared.config import is_current_definition

    return [r for r in rows if is_current_definition(r["config"])]


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    return {"mape": M.mape(pred, truth), "within_10": M.within(pred, truth, 0.10)}


def _mlp(data: Dataset, split: Split, seed: int, settings: TrainSettings) -> tuple[np.ndarray, float]:
    """Test-split predictions of the recipe ``settings`` and its training seconds."""
    model, history, _ = train_predictor(data, split, seed, settings)
    return predict_ms(model, data.x[split.test]), history["seconds"]


def curve(rows: list[dict], seeds: list[int], sizes: tuple[int, ...], statistic: str = "p10_ms",
          single: bool = True) -> dict:
    data = prepare_dataset([r["config"] for r in rows], [r[statistic] for r in rows])
    served = TrainSettings()
    single_settings = replace(served, members=1, loss="mse")
    results: dict[str, dict[str, list[dict]]] = {}
    for seed in seeds:
        base = split_by_key(data.keys, seed, test_frac=0.15, val_frac=0.0)
        test, pool = base.test, np.random.default_rng(seed).permutation(base.train)
        for size in sizes:
            if size > len(pool):
                print(f"  size {size}: only {len(pool)} training configs measured; skipped", flush=True)
                continue
            chosen = pool[:size]
            n_val = max(10, size // 10)
            train, val = chosen[n_val:], chosen[:n_val]
            truth = data.y_ms[test]
            split = Split(train=train, val=val, test=test)
            preds, seconds = {}, {}
            preds["mlp"], seconds["mlp"] = _mlp(data, split, seed, served)
            if single:
                preds["mlp_single"], seconds["mlp_single"] = _mlp(data, split, seed, single_settings)
            preds.update(peer_predictions(data, split, seed))
            for name, pred in preds.items():
                results.setdefault(str(size), {}).setdefault(name, []).append(
                    {**_scores(pred, truth), "train_s": seconds.get(name)})
            line = ", ".join(f"{k} {M.mape(v, truth):.1f}" for k, v in preds.items())
            print(f"  seed {seed} size {size} (test {len(test)}): MAPE % {line}; mlp trained in {seconds['mlp']:.0f} s",
                  flush=True)
    return results


def summarize(results: dict, judged: str = "mlp",
              rivals: tuple[str, ...] = ("random_forest", "lookup_table", "linear_macs")) -> tuple[dict, list[str]]:
    """Per size and predictor, MAPE mean/min/max and mean share within ±10 % over seeds; and one
    line for each size where a rival's mean MAPE is not above ``judged``'s."""
    table, losses = {}, []
    for size, by_name in results.items():
        table[size] = {}
        for name, runs in by_name.items():
            mapes = [r["mape"] for r in runs]
            table[size][name] = {"mape_mean": statistics.fmean(mapes), "mape_min": min(mapes), "mape_max": max(mapes),
                                 "within_10_mean": statistics.fmean(r["within_10"] for r in runs), "seeds": len(runs)}
            if runs[0].get("train_s") is not None:
                table[size][name]["train_s_mean"] = statistics.fmean(r["train_s"] for r in runs)
        ours = table[size][judged]["mape_mean"]
        for rival in rivals:
            if table[size][rival]["mape_mean"] <= ours:
                losses.append(f"size {size}: {rival} {table[size][rival]['mape_mean']:.1f} % <= {judged} {ours:.1f} %")
    return table, losses


def print_table(space: str, table: dict) -> None:
    names = [n for n in ("mlp", "mlp_single", "random_forest", "lookup_table", "linear_macs") if n in next(iter(table.values()))]
    print(f"\n{space} space: test MAPE %, mean [min-max] over seeds (within ±10 % in parentheses)")
    print("size  " + "".join(f"{n:>26}" for n in names))
    for size, row in table.items():
        cells = [f"{row[n]['mape_mean']:.1f} [{row[n]['mape_min']:.1f}-{row[n]['mape_max']:.1f}]"
                 f" ({100 * row[n]['within_10_mean']:.0f})" for n in names]
        print(f"{size:>5} " + "".join(f"{c:>26}" for c in cells) + f"   mlp trained in {row['mlp']['train_s_mean']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="+", choices=sorted(SPACES), default=["demo", "default"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--measure", type=int, default=4000, help="configs to measure per space (once; resumable)")
    ap.add_argument("--no-measure", action="store_true", help="judge on the configs measured so far only")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the configs of each space (resumable) and stop before the curve")
    ap.add_argument("--no-single", action="store_true", help="skip the single MLP (the recipe served before)")
    args = ap.parse_args(argv)
    out: dict = {"sizes": args.sizes, "seeds": args.seeds, "statistic": "p10_ms", "spaces": {}}
    if args.measure_only and args.no_measure:
        ap.error("--measure-only and --no-measure exclude each other")
    all_losses = []
    for space in args.spaces:
        rows = current(load_measured(RUN_DIR / f"{space}.jsonl")) if args.no_measure else measure(space, args.measure)
        print(f"[{space}] {len(rows)} measured configs", flush=True)
        if args.measure_only:
            continue
        results = curve(rows, list(range(args.seeds)), tuple(args.sizes), single=not args.no_single)
        table, losses = summarize(results)
        print_table(space, table)
        out["spaces"][space] = {"n_measured": len(rows), "table": table, "runs": results, "mlp_loses": losses}
        all_losses += [f"{space} {x}" for x in losses]
    if args.measure_only:
        print("measured; run again with --no-measure for the curve")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    out_path = OUT.with_name(f"learning_curve_{'_'.join(args.spaces)}.json") if len(args.spaces) == 1 else OUT
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {out_path}")
    if all_losses:
        print("MISSED: the served MLP does not beat every peer at every size: " + "; ".join(all_losses))
        return 1
    print("OK: the served MLP beats random forest, lookup table and linear-on-MACs at every size and space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
