"""A run stopped after k iterations and resumed from its folder gives the losses of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_model import TinySeg

from search_client.config import build_config
from search_client.data import build_dataset, class_names
from search_client.models import build_model
from search_client.train import Trainer, TrainParts, seed_everything
from search_client.train.checkpoint import list_checkpoints, load_checkpoint
from search_client.train.metrics_log import read_metrics


def _cfg(root: Path, workers: int = 0):
    return build_config("synthetic-cpu", {
        "arch": "tiny",
        "data": {"root": str(root), "crop": (64, 64), "eval_size": None, "num_workers": workers},
        # 8 images / batch 2 = 4 batches per epoch: 7 iterations cross an epoch boundary
        "train": {"iterations": 7, "batch_size": 2, "checkpoint_every": 3, "log_every": 1, "warmup_iters": 2,
                  "deterministic": True, "keep_checkpoints": 5},
    })


class CountingHook:
    """A stateful hook (like a temperature schedule) whose state must survive the resume."""

    name = "counter"

    def __init__(self) -> None:
        self.calls = 0

    def after_step(self, trainer: Trainer, terms: dict[str, float]) -> None:
        self.calls += 1

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


def _trainer(cfg, run_dir: Path, seed: int, hook: CountingHook, arch: str = "tiny") -> Trainer:
    seed_everything(seed, True)
    model = TinySeg(cfg.num_classes) if arch == "tiny" else build_model(arch, cfg.num_classes)
    # An extra term that draws from the global torch RNG, as Gumbel sampling does in the search.
    noise = {"noise": lambda inputs: torch.rand(()) * 0.01}
    parts = TrainParts(extra_terms=noise, term_weights={"noise": 1.0}, hooks=[hook])
    return Trainer(cfg, run_dir, model, build_dataset(cfg.data, "train", True),
                   val_set=build_dataset(cfg.data, "val", False), class_names=class_names("cityscapes"),
                   parts=parts, progress=False)


def _losses(run_dir: Path) -> list[tuple[int, float, float, float]]:
    return [(r["iter"], r["loss"], r["task"], r["noise"]) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("arch", ["tiny", pytest.param("supernet", marks=pytest.mark.slow)])
def test_resume_gives_identical_losses(arch: str, synthetic_root: Path, tmp_path: Path) -> None:
    straight = _trainer(_cfg(synthetic_root), tmp_path / "a", seed=0, hook=CountingHook(), arch=arch)
    straight.fit()

    # "killed" after 5 iterations: the last checkpoint is at 3, iterations 4-5 are lost
    first = _trainer(_cfg(synthetic_root, workers=2), tmp_path / "b", seed=0, hook=CountingHook(), arch=arch)
    first.fit(max_steps=5)
    assert [i for i, _ in list_checkpoints(tmp_path / "b")] == [3]

    # a fresh process: other initial weights, other RNG; everything must come from the run folder
    hook = CountingHook()
    resumed = _trainer(_cfg(synthetic_root, workers=2), tmp_path / "b", seed=99, hook=hook, arch=arch)
    assert resumed.resume() and resumed.iteration == 3 and hook.calls == 3
    resumed.fit()

    expected = _losses(tmp_path / "a")
    assert [row[0] for row in expected] == list(range(1, 8))
    assert _losses(tmp_path / "b") == expected  # bit-identical, deterministic CPU kernels
    assert hook.calls == 7
    for name, p in straight.model.state_dict().items():
        assert torch.equal(p, resumed.model.state_dict()[name]), name
    assert (tmp_path / "b" / "model.pt").is_file() and (tmp_path / "b" / "eval.json").is_file()


def test_checkpoint_holds_everything_to_resume(synthetic_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(_cfg(synthetic_root), tmp_path / "c", seed=0, hook=CountingHook())
    trainer.fit(max_steps=4)
    state = load_checkpoint(list_checkpoints(tmp_path / "c")[-1][1])
    assert state["iteration"] == 3 and (state["epoch"], state["batch_in_epoch"]) == (0, 3)
    assert set(state["optimizers"]) == {"model"} and set(state["schedulers"]) == {"model"}
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["config"]["train"]["iterations"] == 7 and state["hooks"] == {"counter": {"calls": 3}}
