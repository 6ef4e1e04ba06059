"""Adapt a predictor fitted on one device class to another from a few of its measurements.

A lab's next device should not need thousands of fresh measurements: blocks cost the same work on
every device, only the rate at which each kind turns work into time, and the details the cost
model misses, differ. Each member of the base (an ensemble's every member, or the one network)
starts from the base's weights and keeps its standardization, then:

1. its per-kind affine part (the log-cost model, see ``shared.predictor``) is refitted by ridge
   least squares on the new class's log latencies minus the member's MLP correction, shrunk
   towards the base's coefficients rather than towards zero (a coefficient that a few configs do
   not pin stays the base's; the intercept, a device's overall speed, is not shrunk);
2. every weight is fine-tuned at a low rate (Huber loss on log latency, as in ``fit.py``), stopping
   early on the member's own fold of the new measurements; the base member as it was and the
   refitted start compete with every epoch, so a change that only fits noise is not kept.

The members' folds are those of the served recipe (``fit.kfold``), so every new measurement trains
and every member is validated. See ``bench/bench_adaptation.py`` for what it buys over training
from scratch at 50-200 configs.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from profiler_server.predictor.fit import FitStopped, NotEnoughData, kfold
from shared.predictor import LatencyEnsemble, LatencyMLP, Predictor

SINGLE_BASE_FOLDS = 5  # a base of one network is validated on a fifth of the new measurements


@dataclass(frozen=True)
class AdaptSettings:
    # weight of the pull of the affine coefficients towards the base's, per training config
    ridge_to_base: float = 1.0
    lr: float = 1e-3  # half a fit's rate (chosen over 2e-4 and 5e-5 by bench_adaptation at 50-100 configs)
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 300
    patience: int = 40
    max_seconds: float = 60.0  # the whole adaptation, every member included
    huber_delta: float = 0.1  # in log units, as TrainSettings.huber_delta

    def __post_init__(self) -> None:
        if self.ridge_to_base <= 0 or self.lr <= 0 or self.max_epochs < 0:
            raise ValueError("ridge_to_base and lr must be > 0, max_epochs >= 0")


def adapt_predictor(
    base: Predictor,
    x: torch.Tensor,
    y_ms: np.ndarray,
    seed: int = 0,
    settings: AdaptSettings = AdaptSettings(),
    stop: threading.Event | None = None,
) -> tuple[Predictor, dict]:
    """``base`` adapted to the configs ``x`` (N, F) measured ``y_ms`` on the new class; returns a
    predictor of the base's form (an ensemble stays one) and the adaptation's history."""
    members = list(base.members) if isinstance(base, LatencyEnsemble) else [base]
    folds = kfold(len(y_ms), len(members) if len(members) > 1 else SINGLE_BASE_FOLDS, seed)
    if min(map(len, folds)) < 1 or len(y_ms) < 2 * len(folds):
        raise NotEnoughData(f"{len(y_ms)} configs to adapt a predictor of {len(members)} member(s); "
                            f"need at least {2 * len(folds)}: measure more")
    per_member = settings.max_seconds / len(members)
    adapted, histories = [], []
    for k, member in enumerate(members):
        val = folds[k]
        train = np.setdiff1d(np.arange(len(y_ms)), val)
        model, history = adapt_member(member, x[train], y_ms[train], x[val], y_ms[val],
                                      seed * len(members) + k, settings, per_member, stop)
        adapted.append(model)
        histories.append(history)
    model = LatencyEnsemble(adapted).eval() if isinstance(base, LatencyEnsemble) else adapted[0]
    return model, {"epochs": sum(h["epochs"] for h in histories),
                   "seconds": sum(h["seconds"] for h in histories), "members": histories}


def adapt_member(
    member: LatencyMLP,
    x_train: torch.Tensor,
    y_train_ms: np.ndarray,
    x_val: torch.Tensor,
    y_val_ms: np.ndarray,
    seed: int,
    settings: AdaptSettings,
    max_seconds: float,
    stop: threading.Event | None = None,
) -> tuple[LatencyMLP, dict]:
    """One network of the base: refit its affine part towards the base's, then fine-tune; keeps
    the weights of the best validation epoch (-1: the base member unchanged, 0: the refit alone)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(member)
    target, target_val = _standardized(model, y_train_ms), _standardized(model, y_val_ms)
    delta = settings.huber_delta / max(float(model.y_std), 1e-6)

    def loss_fn(pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.huber_loss(pred, t, delta=delta)

    # epoch -1: the base member unchanged (a new class close to the base may need no change)
    best = (_val_loss(model, x_val, target_val, loss_fn), -1, copy.deepcopy(model.state_dict()))
    if model.cost_affine:
        _refit_affine_towards_base(model, x_train, target, settings.ridge_to_base)
        refit = _val_loss(model, x_val, target_val, loss_fn)
        if refit < best[0]:
            best = (refit, 0, copy.deepcopy(model.state_dict()))
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    start, epoch = time.monotonic(), 0
    for epoch in range(1, settings.max_epochs + 1):
        if stop is not None and stop.is_set():
            raise FitStopped(f"stopped at epoch {epoch}")
        model.train()
        for idx in torch.randperm(len(target), generator=gen).split(settings.batch_size):
            loss = loss_fn(model.forward_normalized(x_train[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val_loss = _val_loss(model, x_val, target_val, loss_fn)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        if epoch - best[1] >= settings.patience or time.monotonic() - start > max_seconds:
            break
    model.load_state_dict(best[2])
    model.eval()
    return model, {"epochs": epoch, "best_epoch": best[1], "best_val_loss": best[0],
                   "seconds": time.monotonic() - start}


def _standardized(model: LatencyMLP, y_ms: np.ndarray) -> torch.Tensor:
    """Log latency in the member's own standardization (the base's: its weights expect it)."""
    return (torch.log(torch.as_tensor(y_ms, dtype=torch.float32)) - model.y_mean) / model.y_std


@torch.no_grad()
def _refit_affine_towards_base(model: LatencyMLP, x: torch.Tensor, target: torch.Tensor, ridge: float) -> None:
    """Ridge least squares of (target - MLP correction) on the affine inputs, shrunk towards the
    current (base) coefficients; the intercept is not shrunk."""
    model.eval()
    correction = model.net((x - model.x_mean) / model.x_std).squeeze(-1)
    a = model.affine_inputs(x).double()
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    w0 = torch.cat([model.affine.weight[0], model.affine.bias]).double()
    reg = ridge * len(a) * torch.eye(a1.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0
    coef = torch.linalg.solve(a1.T @ a1 + reg, a1.T @ (target - correction).double() + reg @ w0)
    model.affine.weight.copy_(coef[:-1].float()[None, :])
    model.affine.bias.copy_(coef[-1:].float())


@torch.no_grad()
def _val_loss(model: LatencyMLP, x: torch.Tensor, target: torch.Tensor, loss_fn) -> float:
    model.eval()
    return float(loss_fn(model.forward_normalized(x), target))
