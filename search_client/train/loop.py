"""The training loop shared by pretraining, search and fine-tuning (see the package docstring)."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset

from search_client.config import RunConfig, save_config
from search_client.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from search_client.train.ddp import (
    DistInfo,
    all_gather_objects,
    average_gradients,
    barrier,
    broadcast_parameters,
    mean_across_ranks,
)
from search_client.train.losses import OhemCrossEntropy, as_outputs, loss_shares, segmentation_terms
from search_client.train.metrics_log import MetricsLog
from search_client.train.sampler import ResumableSampler
from search_client.train.schedule import warmup_poly

log = logging.getLogger(__name__)


@dataclass
class StepInputs:
    """What an extra loss term sees: the batch, the train-mode outputs and the iteration (0-based)."""

    images: torch.Tensor  # (B, 3, H, W)
    labels: torch.Tensor  # (B, H, W), 255 = ignore
    outputs: dict  # {"out": (B, K, H, W), "aux": [...]}
    iteration: int


TermFn = Callable[[StepInputs], torch.Tensor]


class TrainHook(Protocol):
    """Optional callbacks; a hook with ``state_dict``/``load_state_dict`` is checkpointed under ``name``."""

    name: str

    def before_step(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, terms: dict[str, float]) -> None: ...


@dataclass
class TrainParts:
    """Everything a phase may swap in; defaults give plain supervised training (SGD + warm-up poly)."""

    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, LRScheduler] = field(default_factory=dict)
    extra_terms: dict[str, TermFn] = field(default_factory=dict)
    term_weights: dict[str, float] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)
    # Parameters (by name) that a term computed outside the model's forward also reaches, e.g. the
    # search's gates and path logits through the latency regularizer. DDP would refuse a gradient it
    # did not see coming; it ignores these, and the trainer averages their gradients over ranks itself.
    synced_outside_ddp: tuple[str, ...] = ()


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def default_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


class Trainer:
    """Runs ``iterations`` steps of ``model`` on ``train_set`` into ``run_dir`` with checkpoints and metrics.

    ``iterations`` defaults to ``cfg.train.iterations``; the search phase passes its own budget.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path | str,
        model: nn.Module,
        train_set: Dataset,
        *,
        val_set: Dataset | None = None,
        class_names: tuple[str, ...] = (),
        parts: TrainParts | None = None,
        dist: DistInfo | None = None,
        iterations: int | None = None,
        progress: bool | None = None,
    ):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.dist = dist or DistInfo()
        self.total = iterations or cfg.train.iterations
        self.model = model.to(self.dist.device)
        self.parts = parts or TrainParts()
        self.ddp_model = self._wrap(self.model)
        self.outside_ddp = self._params_named(self.parts.synced_outside_ddp)
        broadcast_parameters(self.dist, self.outside_ddp)
        self.train_set, self.val_set, self.class_names = train_set, val_set, class_names
        self._default_parts()
        self.criterion = OhemCrossEntropy(cfg.train.ohem_thresh, cfg.train.ohem_min_kept)
        self.use_amp = cfg.train.amp and self.dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.use_amp)
        self.sampler = ResumableSampler(train_set, self.dist.world_size, self.dist.rank, cfg.train.seed)
        self.batches_per_epoch = len(self.sampler) // cfg.train.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training samples cannot fill one batch of {cfg.train.batch_size} "
                             f"on each of {self.dist.world_size} processes; use a smaller batch")
        self.iteration, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.progress = progress
        self.last_terms: dict[str, float] = {}

    # ---- setup -------------------------------------------------------------------------------
    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.dist.distributed:
            return model
        if self.cfg.train.sync_bn and self.dist.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        if self.parts.synced_outside_ddp:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, list(self.parts.synced_outside_ddp))
        # Supernets leave paths unused in a step (sampled blocks, pruned branches).
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def _params_named(self, names: tuple[str, ...]) -> list[nn.Parameter]:
        params = dict(self.model.named_parameters())
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"synced_outside_ddp names parameters the model does not have: {missing[:3]}")
        return [params[n] for n in names]

    def _default_parts(self) -> None:
        t = self.cfg.train
        if not self.parts.optimizers:
            self.parts.optimizers["model"] = default_optimizer(self.model, self.cfg)
        for name, opt in self.parts.optimizers.items():
            if name not in self.parts.schedulers and name == "model":
                self.parts.schedulers[name] = warmup_poly(opt, self.total, t.warmup_iters, t.warmup_start, t.poly_power)
        self.weights = {"task": 1.0, "aux": self.cfg.search.aux_weight, **self.parts.term_weights}

    def loader(self) -> DataLoader:
        self.sampler.set_position(self.epoch, self.batch_in_epoch * self.cfg.train.batch_size)
        workers = self.cfg.data.num_workers
        # A private generator: creating the loader must not draw from the global torch RNG.
        return DataLoader(self.train_set, batch_size=self.cfg.train.batch_size, sampler=self.sampler,
                          num_workers=workers, drop_last=True, pin_memory=self.dist.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.cfg.train.seed), persistent_workers=False)

    # ---- one step ----------------------------------------------------------------------------
    def compute_terms(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = as_outputs(self.ddp_model(images))
        terms = segmentation_terms(self.criterion, outputs["out"], outputs["aux"], labels)
        inputs = StepInputs(images, labels, outputs, self.iteration)
        for name, fn in self.parts.extra_terms.items():
            terms[name] = fn(inputs)
        return terms

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Forward, weighted sum of the named terms, backward, every optimizer and scheduler steps once.

        Returns ``loss``, every term unweighted, and each weighted term's share of ``loss``
        (``share_task``, ``share_aux``, ...; see :func:`~search_client.train.losses.loss_shares`)."""
        self.ddp_model.train()
        with torch.autocast(self.dist.device.type, enabled=self.use_amp):
            terms = self.compute_terms(images, labels)
        loss = sum(self.weights.get(k, 1.0) * v.float() for k, v in terms.items())
        for opt in self.parts.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.dist, self.outside_ddp)
        for opt in self.parts.optimizers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self.parts.schedulers.values():
            sched.step()
        values = {k: float(v.detach()) for k, v in terms.items()}
        return {"loss": float(loss.detach()), **values, **loss_shares(values, self.weights)}

    # ---- loop --------------------------------------------------------------------------------
    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train until ``self.total`` iterations (or ``max_steps`` more, which simulates a kill: no
        checkpoint is forced at the stop). The final iteration writes a checkpoint, ``model.pt`` and
        ``eval.json``."""
        stop = self.total if max_steps is None else min(self.total, self.iteration + max_steps)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.json")
        metrics = MetricsLog(self.run_dir, self.total, self.iteration, self.dist.is_main, self.progress)
        try:
            while self.iteration < stop:
                self._run_epoch(stop, metrics)
            if self.iteration >= self.total:
                self._finish(metrics)
        finally:
            metrics.close()
        return {"iteration": self.iteration, "terms": self.last_terms}

    def _run_epoch(self, stop: int, metrics: MetricsLog) -> None:
        t = self.cfg.train
        tic = time.monotonic()
        for images, labels in self.loader():
            images = images.to(self.dist.device, non_blocking=True)
            labels = labels.to(self.dist.device, non_blocking=True)
            for hook in self.parts.hooks:
                getattr(hook, "before_step", lambda _t: None)(self)
            lr = self.lr()  # the rate this step uses (the scheduler moves on inside the step)
            terms = self.train_step(images, labels)
            self.iteration += 1
            self.batch_in_epoch += 1
            if self.batch_in_epoch == self.batches_per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.last_terms = terms
            for hook in self.parts.hooks:
                getattr(hook, "after_step", lambda _t, _x: None)(self, terms)
            metrics.advance()
            if self.iteration % t.log_every == 0 or self.iteration == stop:
                rate = images.shape[0] * self.dist.world_size / max(time.monotonic() - tic, 1e-9)
                shown = mean_across_ranks(self.dist, terms)
                metrics.write("train", self.iteration, {**shown, "lr": lr, "images_per_s": rate})
            tic = time.monotonic()
            if self.iteration % t.checkpoint_every == 0 and self.iteration < self.total:
                self.save()
            if t.eval_every and self.iteration % t.eval_every == 0 and self.iteration < self.total:
                self._evaluate(metrics)
            if self.iteration >= stop:
                return

    def _finish(self, metrics: MetricsLog) -> None:
        self.save()
        result = self._evaluate(metrics)
        if self.dist.is_main:
            torch.save({"arch": self.cfg.arch, "model_kwargs": self.cfg.model, "num_classes": self.cfg.num_classes,
                        "state_dict": self.model.state_dict(), "config": self.cfg.model_dump(mode="json")},
                       self.run_dir / "model.pt")
            if result is not None:
                (self.run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")

    def _evaluate(self, metrics: MetricsLog) -> dict | None:
        if self.val_set is None:
            return None
        result = None
        if self.dist.is_main:
            from search_client.eval import evaluate

            loader = DataLoader(self.val_set, batch_size=self.cfg.train.eval_batch_size, shuffle=False,
                                num_workers=self.cfg.data.num_workers)
            names = self.class_names or tuple(str(i) for i in range(self.cfg.num_classes))
            res = evaluate(self.model, loader, names, self.dist.device)
            result = {"iter": self.iteration, **res.as_dict()}
            metrics.write("eval", self.iteration, {"miou": res.miou, "pixel_accuracy": res.pixel_accuracy})
        barrier(self.dist)
        return result

    def lr(self, name: str = "model") -> float:
        opt = self.parts.optimizers.get(name) or next(iter(self.parts.optimizers.values()))
        return float(opt.param_groups[0]["lr"])

    # ---- checkpoint / resume -----------------------------------------------------------------
    def state(self, rng: list[object]) -> dict[str, Any]:
        p = self.parts
        return {
            "iteration": self.iteration, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total": self.total, "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in p.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in p.schedulers.items()},
            "scaler": self.scaler.state_dict(), "rng": rng, "config": self.cfg.model_dump(mode="json"),
            "hooks": {h.name: h.state_dict() for h in p.hooks if hasattr(h, "state_dict")},
        }

    def save(self) -> None:
        rng = all_gather_objects(self.dist, rng_state())  # every rank's RNG, saved by rank 0
        if self.dist.is_main:
            save_checkpoint(self.run_dir, self.iteration, self.state(rng), self.cfg.train.keep_checkpoints)
        barrier(self.dist)

    def resume(self) -> bool:
        """Load the newest checkpoint of ``run_dir`` if there is one; True when resumed."""
        path = latest_checkpoint(self.run_dir)
        if path is None:
            return False
        self.load_state(load_checkpoint(path, self.dist.device))
        log.info("resumed %s at iteration %d", self.run_dir, self.iteration)
        return True

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for key, opt in self.parts.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.parts.schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        self.scaler.load_state_dict(state["scaler"])
        for hook in self.parts.hooks:
            if hasattr(hook, "load_state_dict") and hook.name in state["hooks"]:
                hook.load_state_dict(state["hooks"][hook.name])
        self.iteration, self.epoch, self.batch_in_epoch = state["iteration"], state["epoch"], state["batch_in_epoch"]
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0])
