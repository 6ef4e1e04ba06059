"""What every phase of a run shares: settings, run config, phase state, the farm client, the
predictor (fetched once), the datasets and the supernet checkpoints of earlier phases."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_client.config import RunConfig
from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import RunState
from search_client.remote import FetchedPredictor, ProfilerClient
from search_client.train.ddp import DistInfo, broadcast_object

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def beaten_warning(metrics: dict) -> str | None:
    """A line when the served predictor lost to a peer on its own held-out split (None if it won)."""
    beaten = metrics.get("beaten_by") or []
    if not beaten:
        return None
    peers = metrics.get("peers") or {}
    figures = ", ".join(f"{n} {peers[n]['mape']:.1f} %" if n in peers else n for n in beaten)
    return (f"its held-out MAPE {metrics.get('mape', float('nan')):.1f} % loses to {figures}; latency figures "
            "of this run are less reliable (measure more configs and refit)")


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of a ``model.pt`` (the trainer's final file) or of a training checkpoint."""
    from search_client.train.checkpoint import load_checkpoint

    state = load_checkpoint(Path(path))
    return state.get("state_dict") or state["model"]


@dataclass
class PipelineContext:
    settings: PipelineSettings
    client: ProfilerClient | None = None
    say: Say = log.info
    max_steps: int | None = None  # stop a training phase after this many steps of this call (a planned kill)
    dist: DistInfo = field(default_factory=DistInfo)  # rank, world size and device of this process
    _cfg: RunConfig | None = None
    _predictor: FetchedPredictor | None = None
    _datasets: tuple[Any, Any] | None = None
    _device_class: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> RunConfig:
        if self._cfg is None:
            self._cfg = self.settings.run_config()
        return self._cfg

    @property
    def state(self) -> RunState:
        return RunState(self.settings.run_dir)

    @property
    def latency_size(self) -> tuple[int, int]:
        return self.settings.latency_size

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def device_class(self) -> str:
        if self._device_class is None:
            if self.settings.device_class:
                self._device_class = self.settings.device_class
            else:
                from android_harness.host import host_device_class

                self._device_class = host_device_class()
        return self._device_class

    def require_client(self) -> ProfilerClient:
        if self.client is None:
            s = self.settings
            self.client = ProfilerClient(s.server, s.token, cache_dir=s.cache_dir)
        return self.client

    def predictor(self) -> FetchedPredictor:
        """The target's predictor, fetched once (disk-cached; offline fallback). Under torchrun rank 0
        fetches it and hands the same version to every rank."""
        if self._predictor is None:
            fetched: FetchedPredictor | Exception | None = None
            if self.dist.is_main:
                try:
                    fetched = self._fetch_predictor()
                except Exception as exc:  # handed to every rank, so they all stop with rank 0's message
                    if not self.dist.distributed:
                        raise
                    fetched = exc
            fetched = broadcast_object(self.dist, fetched)
            if isinstance(fetched, Exception):
                raise fetched
            self._predictor = fetched
            warning = beaten_warning(fetched.meta.get("metrics") or {})
            if warning:
                self.say(f"warning: predictor v{fetched.version} for {self.device_class}: {warning}")
        return self._predictor

    def _fetch_predictor(self) -> FetchedPredictor:
        fetched = self.require_client().fetch_predictor(self.device_class, self.settings.runtime)
        if fetched.offline:
            self.say(f"profiler service unreachable: using cached predictor v{fetched.version} ({fetched.path})")
        fetched.model.requires_grad_(False)
        return fetched

    def iterations(self, phase: str) -> int:
        s, c = self.settings, self.cfg
        budget = {"pretrain": (s.pretrain_iters, c.train.iterations), "search": (s.search_iters, c.search.iterations),
                  "finetune": (s.finetune_iters, c.search.finetune_iterations)}[phase]
        return budget[1] if budget[0] is None else budget[0]

    def datasets(self) -> tuple[Any, Any]:
        if self._datasets is None:
            from search_client.data import build_dataset

            data = self.cfg.data
            self._datasets = (build_dataset(data, data.train_split, train=True),
                              build_dataset(data, data.val_split, train=False))
        return self._datasets

    def class_names(self) -> tuple[str, ...]:
        from search_client.data import class_names

        return class_names(self.cfg.data.kind)

    def build_supernet(self) -> nn.Module:
        from search_client.models import build_from_config

        return build_from_config(self.cfg)

    def pretrained_supernet(self) -> nn.Module:
        """The pretrained supernet in its full mode (the teacher), frozen, eval mode."""
        model = self.build_supernet()
        model.load_state_dict(load_weights(self.state.result("pretrain")["model"]))
        model.eval().requires_grad_(False)
        return model.to(self.device)

    def searched_supernet(self) -> nn.Module:
        """The supernet as the search left it: gates installed, Gumbel logits trained."""
        model = self.build_supernet()
        model.install_gates(init=self.settings.gate_init)
        model.set_search(self.cfg.search.tau_end)
        model.load_state_dict(load_weights(self.state.result("search")["model"]))
        return model.eval().to(self.device)

    def compact(self, phase: str = "finetune") -> nn.Module:
        """The derived network with the weights of ``phase`` (``derive`` or ``finetune``), on the CPU
        (export and measurement need it there; training and evaluation move it to the device)."""
        from search_client.models import build_model

        spec = self.state.result("derive")["spec"]
        model = build_model("subnet", self.cfg.num_classes, spec=spec)
        model.load_state_dict(load_weights(self.state.result(phase)["model"]))
        return model.eval()
