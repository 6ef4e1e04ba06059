"""Benchmark: the paper's model sizes from one supernet (Table 1: RTSeg-L / M / S).

One paper-size supernet (``SupernetConfig()``: about 136 GMACs / 24.4 M params at 512x1024) is
trained briefly at a small resolution on synthetic Cityscapes-like scenes, then searched three times
from that same state with a GMACs target (Eq. 8's regularizer on computation, counted at 512x1024):
20.8, 9.2 and 5.7 GMACs. Each search trains weights, DWBC gates and Gumbel logits together on the
task loss plus ``beta * |expected GMACs / target - 1|``; the derivation then holds the derived
network's analytic GMACs within the tolerance (as ``rtseg-search run --target-gmacs`` does). It
prints, per target, the derived network's GMACs and params at 512x1024 beside the paper's params
(5.55 / 3.56 / 2.69 M), the smallest derivable network and the supernet, and writes
``runs/bench/sizes.json``. The last line says whether every derived size is within +-5 % of its target.

Sizes only: a few steps at 64x128 say nothing about accuracy, and no mIoU is reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from search_client.count import count_model, smallest_spec
from search_client.data.cityscapes import map_label_ids
from search_client.data.synthetic import render_scene
from search_client.models import build_model
from search_client.pipeline.derivation import fit_to_target, gmacs
from search_client.search.derive import subnet_spec
from search_client.search.gumbel import temperature_at
from search_client.search.latency import expected_gmacs, latency_loss

OUT = Path("runs/bench/sizes.json")
TARGETS = {"RTSeg-L": (20.8, 5.55), "RTSeg-M": (9.2, 3.56), "RTSeg-S": (5.7, 2.69)}  # GMACs, paper's M params
COUNT_SIZE = (512, 1024)
TOLERANCE = 0.05


def synthetic_batch(n: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) normalized images and (n, H, W) train ids of synthetic street scenes."""
    images, labels = [], []
    for _ in range(n):
        image, ids = render_scene(*size, rng)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1)
        labels.append(torch.from_numpy(map_label_ids(ids).astype(np.int64)))
    return torch.stack(images), torch.stack(labels)


def task_loss(out: dict, labels: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(out["out"], labels, ignore_index=255)
    return loss + sum(F.cross_entropy(a, labels, ignore_index=255) for a in out["aux"])


def pretrain(model: torch.nn.Module, batches: list, steps: int, lr: float) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for i in range(steps):
        images, labels = batches[i % len(batches)]
        loss = task_loss(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def search(supernet: torch.nn.Module, batches: list, target: float, steps: int, beta: float, lr: float) -> dict:
    """Weights, gates and path logits trained together toward a GMACs target at COUNT_SIZE."""
    supernet.install_gates()
    supernet.set_search(10.0)
    weights = torch.optim.SGD(list(supernet.weight_parameters()), lr=lr, momentum=0.9)
    arch = torch.optim.Adam(supernet.arch_parameters(), lr=0.05, betas=(0.5, 0.999))
    gates = torch.optim.Adam(supernet.gate_parameters(), lr=0.05, betas=(0.5, 0.999))
    supernet.train()
    curve = []
    for i in range(steps):
        supernet.set_temperature(temperature_at(i, steps, 10.0, 0.1))
        images, labels = batches[i % len(batches)]
        expected = expected_gmacs(supernet, *COUNT_SIZE)
        loss = task_loss(supernet(images), labels) + beta * latency_loss(expected, target, "two-sided")
        for opt in (weights, arch, gates):
            opt.zero_grad()
        loss.backward()
        for opt in (weights, arch, gates):
            opt.step()
        curve.append(float(expected.detach()))
    supernet.eval()
    searched = gmacs(supernet, COUNT_SIZE)
    fit = fit_to_target(supernet, None, target, COUNT_SIZE, TOLERANCE / 2, cost=lambda m: gmacs(m, COUNT_SIZE))
    return {"expected_gmacs_curve": curve[:: max(1, steps // 10)] + curve[-1:], "searched_gmacs": searched,
            "fit": fit, "spec": subnet_spec(supernet)}


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """One short-trained supernet (its own seed), searched at each target; prints that seed's table."""
    torch.manual_seed(seed)
    size = tuple(int(v) for v in args.train_size.split("x"))
    rng = np.random.default_rng(seed)
    batches = [synthetic_batch(args.batch, size, rng) for _ in range(4)]
    tic = time.perf_counter()
    supernet = build_model("supernet")
    losses = pretrain(supernet, batches, args.pretrain_steps, args.lr)
    print(f"seed {seed}: supernet trained {args.pretrain_steps} steps at {size[0]}x{size[1]}: loss {losses[0]:.2f} -> "
          f"{losses[-1]:.2f} ({time.perf_counter() - tic:.0f} s)")
    rows = {}
    for name, (target, paper_params) in TARGETS.items():
        tic = time.perf_counter()
        result = search(copy.deepcopy(supernet), batches, target, args.search_steps, args.beta, args.lr)
        counted = count_model("subnet", *COUNT_SIZE, spec=result["spec"])
        rows[name] = {
            "target_gmacs": target, "gmacs": counted["gmacs"], "params_m": counted["params_m"],
            "paper_params_m": paper_params, "vs_target": counted["gmacs"] / target - 1,
            "searched_gmacs": result["searched_gmacs"], "derive_rounds": result["fit"]["rounds"],
            "expected_gmacs_curve": result["expected_gmacs_curve"], "seconds": time.perf_counter() - tic,
            "spec": result["spec"],
        }  # fmt: skip
        print(f"  {name}: searched {result['searched_gmacs']:.2f} GMACs, derived {counted['gmacs']:.2f} GMACs / "
              f"{counted['params_m']:.2f} M params (target {target}; {rows[name]['seconds']:.0f} s)", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", default="64x128", help="training crop HxW (default 64x128)")
    parser.add_argument("--pretrain-steps", type=int, default=6)
    parser.add_argument("--search-steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2, help="at least 2 (BatchNorm of the pooled context)")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the GMACs regularizer")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="one short-trained supernet per seed, each searched at every target (default 0 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    full = count_model("supernet", *COUNT_SIZE)
    smallest = count_model("subnet", *COUNT_SIZE, spec=smallest_spec())
    by_seed = {seed: run_seed(args, seed) for seed in args.seeds}
    print(f"\n{'network':10s} {'target':>8s} {'derived GMACs (per seed)':>26s} {'vs target':>17s} "
          f"{'params (per seed)':>20s} {'paper params':>12s}")
    print(f"{'supernet':10s} {'':>8s} {full['gmacs']:26.2f} {'':>17s} {full['params_m']:19.2f}M {24.43:11.2f}M")
    print(f"{'smallest':10s} {'':>8s} {smallest['gmacs']:26.2f} {'':>17s} {smallest['params_m']:19.2f}M")
    summary = {}
    for name, (target, paper_params) in TARGETS.items():
        runs = [by_seed[s][name] for s in args.seeds]
        g = [r["gmacs"] for r in runs]
        p = [r["params_m"] for r in runs]
        v = [r["vs_target"] for r in runs]
        summary[name] = {"target_gmacs": target, "paper_params_m": paper_params, "gmacs": g, "params_m": p,
                         "vs_target": v, "worst_abs_vs_target": max(abs(x) for x in v)}
        print(f"{name:10s} {target:8.2f} {' / '.join(f'{x:.2f}' for x in g):>26s} "
              f"{min(v):+.1%}..{max(v):+.1%}".ljust(62) + f" {' / '.join(f'{x:.2f}' for x in p):>19s}M"
              f" {paper_params:11.2f}M")
    ok = all(s["worst_abs_vs_target"] <= TOLERANCE for s in summary.values())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"args": vars(args), "count_size": COUNT_SIZE, "ok": ok,
                               "supernet": {**full, "paper_params_m": 24.43, "paper_gmacs": 136.0},
                               "smallest": smallest, "summary": summary,
                               "by_seed": {str(k): v for k, v in by_seed.items()}}, indent=2) + "\n")
    if ok:
        print(f"OK: every derived network of every seed within +-{TOLERANCE:.0%} of its GMACs target ({OUT})")
    else:
        print(f"MISSED: a derived network is outside +-{TOLERANCE:.0%} of its GMACs target (see {OUT})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
