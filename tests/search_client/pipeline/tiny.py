"""Helpers of the pipeline tests: a tiny supernet, its settings, a predictor fitted on its block space."""

from __future__ import annotations

from pathlib import Path

import torch

from search_client.pipeline.settings import PipelineSettings
from shared.costs import block_macs
from shared.encoding import encode_blocks
from shared.predictor import LatencyMLP

TINY_SUPERNET = {
    "detail_widths": (8, 16, 16), "detail_depths": (1, 1, 1), "stem": 8, "stage_widths": (16, 16, 16),
    "depths": (1, 1, 2), "down_expansion": 2, "lir_expansion": 2, "heads": (2, 2, 2), "patches": (2, 2, 1),
    "mhsa_mid": (16, 32, 32), "head_mid": 32, "aux_mid": 8,
}
LATENCY_SIZE = (64, 128)


def tiny_settings(runs: Path, data: Path, **kw: object) -> PipelineSettings:
    overrides = {
        "model": {"config": TINY_SUPERNET},
        "data": {"root": str(data), "crop": (64, 128), "eval_size": (64, 128), "scales": (1.0,)},
        "train": {"batch_size": 2, "log_every": 1, "checkpoint_every": 2, "warmup_iters": 1, "deterministic": True},
        "search": {"arch_lr": 0.01, "latency_weight": 0.5},
    }
    base = {"name": "tiny", "runs_dir": runs, "overrides": overrides, "pretrain_iters": 2, "search_iters": 4,
            "finetune_iters": 2, "latency_height": LATENCY_SIZE[0], "latency_width": LATENCY_SIZE[1],
            "device_class": "host/test-cpu", "progress": False}
    return PipelineSettings(**{**base, **kw})


def macs_proxy_predictor(seed: int = 0) -> LatencyMLP:
    """A real LatencyMLP fitted (briefly) to latency = 1e-6 ms per MAC + 0.05 ms on the tiny
    supernet's block space: monotone in widths, so gradients have a meaning."""
    from search_client.models import build_model
    from search_client.pipeline.space import supernet_space
    from shared.space import sample_uniform

    torch.manual_seed(seed)
    space = supernet_space(build_model("supernet", 19, config=TINY_SUPERNET), [LATENCY_SIZE])
    configs = sample_uniform(space, 300, seed)
    x = encode_blocks(configs)
    y = torch.tensor([0.05 + 1e-6 * block_macs(c) for c in configs]).log()
    model = LatencyMLP(hidden=64)
    model.set_normalization(x, y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = (y - model.y_mean) / model.y_std
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model.forward_normalized(x), target)
        loss.backward()
        opt.step()
    return model.eval()
