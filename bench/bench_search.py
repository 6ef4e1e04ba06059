"""Benchmark of the latency-aware search (issue: search_client II).

1. Step cost, same batch, one process: search step (hard-Gumbel single path, gates, teacher forward,
   latency regularizer, three optimizers) over a plain supernet training step (target <= 1.5), for
   the demo's narrow supernet and for the paper's widths (where convolutions, not the per-pixel
   losses at 19 classes, dominate a step, as they do in the paper's setting);
   the latency regularizer's share of a search step (forward + backward of the expected latency,
   target <= 5 %); HTTP requests sent during search steps (target 0).
2. On this host through a real local farm (``rtseg-search demo`` machinery, synthetic data, target =
   50 % of the supernet's predicted latency): the compact network's measured latency vs its target
   (target within +-15 %), predicted vs measured, GMACs vs the supernet, and mIoU beside the
   supernet's after the same fine-tuning budget (the pretrained supernet trained for the same number
   of extra iterations as the compact network's fine-tuning).

Prints the figures and writes ``runs/bench/search.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from search_client.pipeline.context import PipelineContext
from search_client.pipeline.demo import DEFAULT, FULL, DemoProfile, demo_settings, run_demo
from search_client.pipeline.search import LatencyTerm, search_parts, search_student
from search_client.pipeline.state import RunState
from search_client.remote import ProfilerClient
from search_client.search.latency import expected_latency, latency_loss
from search_client.train import Trainer, TrainParts

OUT = Path("runs/bench/search.json")


def _median_step(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    trainer.train_step(images, labels)  # warm-up (allocator, first Gumbel sample)
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        trainer.train_step(images, labels)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _regularizer_time(student: torch.nn.Module, predictor: torch.nn.Module, size: tuple[int, int], reps: int) -> float:
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        loss = latency_loss(expected_latency(student, predictor, *size), 1.0, "two-sided")
        loss.backward()
        times.append(time.perf_counter() - tic)
    student.zero_grad(set_to_none=True)
    return statistics.median(times)


def step_costs(run_dir: Path, server: str, steps: int, profile: DemoProfile, paper_size: bool = False) -> dict:
    """Plain vs search step on one batch, with the demo's trained supernet and fetched predictor;
    ``paper_size``: the paper's supernet widths instead (fresh weights: timing does not depend on them)."""
    settings = demo_settings(profile, run_dir).model_copy(update={"server": server})
    if paper_size:
        overrides = {**settings.overrides, "model": {"config": {}}}  # the default supernet = the paper's
        settings = settings.model_copy(update={"overrides": overrides})
    ctx = PipelineContext(settings, client=ProfilerClient(server, cache_dir=settings.cache_dir))
    ctx._device_class = json.loads((run_dir / "report.json").read_text())["device_class"]
    predictor = ctx.predictor().model
    train_set, _ = ctx.datasets()
    plain = ctx.build_supernet()
    if paper_size:
        pretrained = plain.state_dict()
        teacher = ctx.build_supernet()
        teacher.load_state_dict(pretrained)
        teacher.eval().requires_grad_(False)
    else:
        pretrained = torch.load(ctx.state.result("pretrain")["model"], weights_only=False)["state_dict"]
        plain.load_state_dict(pretrained)
        teacher = ctx.pretrained_supernet()
    tag = "-paper" if paper_size else ""
    plain_trainer = Trainer(ctx.cfg, run_dir / f"bench-plain{tag}", plain, train_set, parts=TrainParts(),
                            iterations=10**6, progress=False)
    images, labels = next(iter(plain_trainer.loader()))
    t_plain = _median_step(plain_trainer, images, labels, steps)
    student = search_student(ctx, pretrained)
    term = LatencyTerm(student, predictor, 1.0, ctx.latency_size, "two-sided")
    search_trainer = Trainer(ctx.cfg, run_dir / f"bench-search{tag}", student, train_set, iterations=10**6,
                             progress=False, parts=search_parts(ctx, student, teacher, term))
    calls = ctx.client.calls
    t_search = _median_step(search_trainer, images, labels, steps)
    http_calls = ctx.client.calls - calls
    t_reg = _regularizer_time(student, predictor, ctx.latency_size, steps)
    return {"plain_step_s": t_plain, "search_step_s": t_search, "search_over_plain": t_search / t_plain,
            "regularizer_s": t_reg, "regularizer_share": t_reg / t_search, "http_calls_during_search_steps": http_calls,
            "batch": list(images.shape), "steps": steps}


def supernet_same_budget(run_dir: Path, profile: DemoProfile) -> float | None:
    """mIoU of the pretrained supernet after as many extra iterations as the compact net's fine-tune."""
    settings = demo_settings(profile, run_dir)
    ctx = PipelineContext(settings)
    iters = ctx.iterations("finetune")
    if iters == 0:
        return None
    model = ctx.build_supernet()
    model.load_state_dict(torch.load(ctx.state.result("pretrain")["model"], weights_only=False)["state_dict"])
    train_set, val_set = ctx.datasets()
    folder = run_dir / "bench-supernet-finetune"
    trainer = Trainer(ctx.cfg, folder, model, train_set, val_set=val_set, class_names=ctx.class_names(),
                      iterations=iters, progress=False)
    trainer.resume()
    trainer.fit()
    return json.loads((folder / "eval.json").read_text())["miou"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/search-demo"))
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)  # step ratios on one core: comparable between runs on a shared machine
    profile = FULL if args.full else DEFAULT
    report = run_demo(full=args.full, out=args.out, threads=1)
    from search_client.pipeline.localfarm import LocalFarm

    with LocalFarm(args.out / "profiler.db", args.out / "profiler-server.log", data_dir=args.out / "profiler-data") as farm:
        costs = step_costs(args.out, farm.url, args.steps, profile)
        paper = step_costs(args.out, farm.url, max(2, args.steps // 3), profile, paper_size=True)
    costs["paper_size_supernet"] = {k: paper[k] for k in ("plain_step_s", "search_step_s", "search_over_plain",
                                                          "regularizer_share", "http_calls_during_search_steps")}
    sup_same = supernet_same_budget(args.out, profile)
    state = RunState(args.out)
    figures = {
        **costs,
        "target_ms": report["target_ms"], "predicted_ms": report["predicted_ms"], "measured_ms": report["measured_ms"],
        "measured_vs_target": report["measured_vs_target"], "predicted_vs_measured": report["predicted_vs_measured"],
        "within_15pct_of_target": abs(report["measured_vs_target"]) <= 0.15,
        "gmacs": report["gmacs"], "supernet_gmacs": report["supernet_gmacs"],
        "gmacs_ratio": report["gmacs"] / report["supernet_gmacs"],
        "miou": report["miou"], "supernet_miou_pretrained": report["supernet_miou"],
        "supernet_miou_same_finetune_budget": sup_same,
        "supernet_predicted_ms": report["supernet_predicted_ms"], "supernet_measured_ms": report.get("supernet_measured_ms"),
        "device_class": report["device_class"], "runtime": report["runtime"],
        "iterations": report["iterations"], "profile": "full" if args.full else "default",
        "search_phase_seconds": json.loads((state.marks / "search.json").read_text()).get("seconds"),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:36s} {value}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
