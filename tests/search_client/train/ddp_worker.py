"""Run under torchrun by test_train_ddp: a few DDP steps of a tiny model; each rank dumps what it holds."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tiny_model import TinySeg

from search_client.config import build_config
from search_client.data import build_dataset
from search_client.train import Trainer, cleanup_distributed, init_distributed, seed_everything


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    cfg = build_config("synthetic-cpu", {
        "data": {"root": root, "crop": (32, 64), "eval_size": None},
        "train": {"iterations": 3, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "warmup_iters": 1},
    })
    seed_everything(cfg.train.seed + info.rank, True)  # different init per rank: DDP must broadcast rank 0's
    model = TinySeg(cfg.num_classes)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(cfg, Path(out) / "run", model, build_dataset(cfg.data, "train", True), dist=info, progress=False)
    trainer.sampler.set_position(0, 0)
    shard = [i for i, _ in trainer.sampler]
    trainer.fit()
    torch.save({"params": dict(model.named_parameters()), "shard": shard, "init": init, "world": info.world_size},
               Path(out) / f"rank{info.rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
