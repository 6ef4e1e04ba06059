"""Mixed precision on a CUDA device (never in CI: marked gpu, skipped without a GPU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_model import TinySeg

from search_client.config import build_config
from search_client.data import build_dataset
from search_client.train import DistInfo, Trainer
from search_client.train.checkpoint import latest_checkpoint, load_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_amp_training_on_cuda(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = build_config("synthetic-cpu", {"data": {"root": str(synthetic_root), "crop": (32, 64), "eval_size": None},
                                         "train": {"iterations": 3, "batch_size": 2, "log_every": 1}})
    trainer = Trainer(cfg, tmp_path, TinySeg(cfg.num_classes), build_dataset(cfg.data, "train", True),
                      dist=DistInfo(device=torch.device("cuda", 0)), progress=False)
    assert trainer.use_amp and trainer.scaler.is_enabled()
    result = trainer.fit()
    assert math.isfinite(result["terms"]["loss"])
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["scaler"]["scale"] > 0 and "cuda" in state["rng"][0]
