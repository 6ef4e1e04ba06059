"""Run under torchrun by test_pipeline_ddp: the pipeline's phases up to fine-tuning as one DDP job of
2 gloo processes; each rank dumps the search's and the fine-tune's parameters as it holds them."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from search_client.pipeline.context import PipelineContext
from search_client.pipeline.runner import run_phases
from search_client.remote import FetchedPredictor, ProfilerClient
from search_client.train import cleanup_distributed, init_distributed
from tests.search_client.pipeline.tiny import macs_proxy_predictor, tiny_settings


def _initial_arch_state(ctx: PipelineContext) -> dict[str, torch.Tensor]:
    """Path logits and gate weights as the search starts them (before any step)."""
    from search_client.pipeline.context import load_weights
    from search_client.pipeline.search import search_student

    student = search_student(ctx, load_weights(ctx.state.result("pretrain")["model"]))
    return {n: p.detach().clone() for n, p in student.named_parameters() if "arch_logits" in n or "gate" in n}


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    settings = tiny_settings(Path(out), Path(data), pretrain_iters=2, search_iters=3, finetune_iters=2,
                             measure=False, device="cpu")
    ctx = PipelineContext(settings, client=ProfilerClient("http://127.0.0.1:9"), dist=info)
    # The same predictor on every rank (the pipeline broadcasts rank 0's when it fetches one itself).
    ctx._predictor = FetchedPredictor(macs_proxy_predictor(), {}, 1, 1, "host/test-cpu", "onnxruntime",
                                      Path(out) / "p")
    run_phases(ctx, "finetune")
    trained = ctx.cache["trained"]
    torch.save({
        "world": info.world_size,
        "search": {n: p.detach().clone() for n, p in trained["search"].named_parameters()},
        "search_start": _initial_arch_state(ctx),
        "finetune": {n: p.detach().clone() for n, p in trained["finetune"].named_parameters()},
        "derived": {n: p.detach().clone() for n, p in ctx.compact("derive").named_parameters()},
        "phases": ctx.state.summary(),
    }, Path(out) / f"rank{info.rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
