"""Adapt a predictor fitted on one device class to another from a few of its measurements.

A lab's next device should not need thousands of fresh measurements: blocks cost the same work on
every device, only the rate at which each kind turns work into time, and the details the cost
model misses, differ. Each member of the base (an ensemble's every member, or the one network)
starts from the base's weights and keeps its standardization; the new measurements are cut into
the members' folds (``fit.kfold``, as the served recipe cuts its training configs), each member
learns from the other folds and is judged on its own, so every measurement is judged once, by a
member that did not learn from it. Candidates, judged on those pooled out-of-fold errors (MAPE,
the figure every version is judged by: a Huber loss on log latency preferred refits that raised
the held-out MAPE on bench_adaptation's second class):

- ``unchanged``: the base as it is (a new class that differs from the base by less than its
  labels' noise gains nothing from moving it);
- ``refit ridge R``: each member's per-kind affine part (the log-cost model, see
  ``shared.predictor``) refitted by Huber regression on the new class's log latencies minus the
  member's MLP correction, shrunk towards the base's coefficients with weight R per config rather
  than towards zero (a coefficient a few configs do not pin stays the base's; the intercept, a
  device's overall speed, is not shrunk).

The candidate with the lowest pooled error is kept; with ``max_epochs`` > 0 each member is then
fine-tuned at a low rate, stopping early on its own fold (the candidate's weights compete with
every epoch). The fine-tune is off by default: on ``bench/bench_adaptation.py``'s second device
class it made the held-out error worse at 50 and 100 configs (noisy labels of a shared host).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from profiler_server.predictor.fit import Dataset, FitStopped, NotEnoughData, Split, Trainer, kfold
from shared.predictor import LatencyEnsemble, LatencyMLP, Predictor

SINGLE_BASE_FOLDS = 5  # a base of one network is judged on five folds of the new measurements


@dataclass(frozen=True)
class AdaptSettings:
    # pulls of the affine coefficients towards the base's (per training config) to choose among,
    # beside leaving the base unchanged
    ridges: tuple[float, ...] = (1.0, 0.1)
    max_epochs: int = 0  # > 0: fine-tune every weight afterwards (see the module doc)
    lr: float = 1e-3
    batch_size: int = 32
    patience: int = 40
    max_seconds: float = 60.0  # the fine-tune, every member included
    huber_delta: float = 0.1  # in log units, as TrainSettings.huber_delta

    def __post_init__(self) -> None:
        if any(r <= 0 for r in self.ridges) or self.lr <= 0 or self.max_epochs < 0:
            raise ValueError("ridges and lr must be > 0, max_epochs >= 0")


@dataclass
class Fold:
    """One member's share of the new measurements: what it learns from and what judges it."""

    x_train: torch.Tensor
    target: torch.Tensor  # standardized log latency, in the member's own standardization
    x_val: torch.Tensor
    target_val: torch.Tensor
    delta: float  # the Huber threshold in standardized units

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.huber_loss(pred, target, delta=self.delta)


def adapt_predictor(
    base: Predictor,
    x: torch.Tensor,
    y_ms: np.ndarray,
    seed: int = 0,
    settings: AdaptSettings = AdaptSettings(),
    stop: threading.Event | None = None,
) -> tuple[Predictor, dict]:
    """``base`` adapted to the configs ``x`` (N, F) measured ``y_ms`` on the new class; returns a
    predictor of the base's form (an ensemble stays one) and the adaptation's history (``chosen``:
    the candidate kept, ``pooled_mape``: each candidate's out-of-fold MAPE)."""
    members = list(base.members) if isinstance(base, LatencyEnsemble) else [base]
    folds = kfold(len(y_ms), len(members) if len(members) > 1 else SINGLE_BASE_FOLDS, seed)
    if len(y_ms) < 2 * len(folds):
        raise NotEnoughData(f"{len(y_ms)} configs to adapt a predictor of {len(members)} member(s); "
                            f"need at least {2 * len(folds)}: measure more")
    shares = [_fold(m, x, y_ms, folds[k], settings.huber_delta) for k, m in enumerate(members)]
    pooled, candidates = {}, {}
    for ridge in (None, *settings.ridges):
        name = "unchanged" if ridge is None else f"refit ridge {ridge:g}"
        candidates[name] = [_refit(m, share, ridge) for m, share in zip(members, shares, strict=True)]
        pooled[name] = 100 * sum(_relative_error_sum(m, share)
                                 for m, share in zip(candidates[name], shares, strict=True)) / len(y_ms)
    chosen = min(pooled, key=pooled.get)
    adapted, histories = candidates[chosen], []
    if settings.max_epochs > 0:
        per_member = settings.max_seconds / len(members)
        for k, (member, share) in enumerate(zip(adapted, shares, strict=True)):
            histories.append(fine_tune(member, share, seed * len(members) + k, settings, per_member, stop))
    model = LatencyEnsemble(adapted).eval() if isinstance(base, LatencyEnsemble) else adapted[0].eval()
    return model, {"chosen": chosen, "pooled_mape": pooled, "epochs": sum(h["epochs"] for h in histories),
                   "seconds": sum(h["seconds"] for h in histories), "members": histories}


def adapting(base: Predictor, settings: AdaptSettings = AdaptSettings()) -> Trainer:
    """A trainer for ``fit.fit_predictor`` that adapts ``base`` to the split's training and
    validation configs (the members' folds do the validating)."""

    def train(data: Dataset, split: Split, seed: int, stop: threading.Event | None) -> tuple[Predictor, dict, np.ndarray]:
        fit_idx = np.concatenate([split.train, split.val])
        model, history = adapt_predictor(base, data.x[fit_idx], data.y_ms[fit_idx], seed, settings, stop)
        return model, history, fit_idx

    return train


def _fold(member: LatencyMLP, x: torch.Tensor, y_ms: np.ndarray, val: np.ndarray, huber_delta: float) -> Fold:
    train = np.setdiff1d(np.arange(len(y_ms)), val)
    log_ms = torch.log(torch.as_tensor(y_ms, dtype=torch.float32))
    target = (log_ms - member.y_mean) / member.y_std  # the base's standardization: its weights expect it
    return Fold(x_train=x[train], target=target[train], x_val=x[val], target_val=target[val],
                delta=huber_delta / max(float(member.y_std), 1e-6))


def _refit(member: LatencyMLP, share: Fold, ridge: float | None) -> LatencyMLP:
    """A copy of ``member``, its affine part refitted on its fold's training share (``ridge``
    None: unchanged; so is a member without an affine part)."""
    model = copy.deepcopy(member).eval()
    if ridge is not None and model.cost_affine:
        _refit_affine_towards_base(model, share.x_train, share.target, ridge, share.delta)
    return model


@torch.no_grad()
def _loss_sum(model: LatencyMLP, share: Fold) -> float:
    return float(share.loss(model.forward_normalized(share.x_val), share.target_val)) * len(share.target_val)


@torch.no_grad()
def _relative_error_sum(model: LatencyMLP, share: Fold) -> float:
    """Summed |predicted / measured - 1| on the member's own fold (what MAPE averages)."""
    log_ratio = (model.forward_normalized(share.x_val) - share.target_val) * model.y_std
    return float((torch.exp(log_ratio.double()) - 1).abs().sum())


def fine_tune(
    model: LatencyMLP, share: Fold, seed: int, settings: AdaptSettings, max_seconds: float,
    stop: threading.Event | None = None,
) -> dict:
    """Adam on every weight at ``settings.lr``; keeps the weights of the best epoch on the member's
    own fold (epoch 0: the weights it started from). Modifies ``model`` in place."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    best = (_loss_sum(model.eval(), share), 0, copy.deepcopy(model.state_dict()))
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    start, epoch = time.monotonic(), 0
    for epoch in range(1, settings.max_epochs + 1):
        if stop is not None and stop.is_set():
            raise FitStopped(f"stopped at epoch {epoch}")
        model.train()
        for idx in torch.randperm(len(share.target), generator=gen).split(settings.batch_size):
            loss = share.loss(model.forward_normalized(share.x_train[idx]), share.target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = _loss_sum(model.eval(), share)
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        if epoch - best[1] >= settings.patience or time.monotonic() - start > max_seconds:
            break
    model.load_state_dict(best[2])
    model.eval()
    return {"epochs": epoch, "best_epoch": best[1], "seconds": time.monotonic() - start}


@torch.no_grad()
def _refit_affine_towards_base(model: LatencyMLP, x: torch.Tensor, target: torch.Tensor, ridge: float,
                               delta: float, iterations: int = 20) -> None:
    """Huber regression (iteratively reweighted ridge) of (target - MLP correction) on the affine
    inputs, shrunk towards the current (base) coefficients; the intercept is not shrunk. Huber, not
    least squares: a label that a slow burst of a shared device inflated would otherwise shift the
    whole device (on bench_adaptation's 50 configs a least-squares shift alone took the base from
    27 % to 38 % MAPE)."""
    goal = (target - model.net((x - model.x_mean) / model.x_std).squeeze(-1)).double()
    a = model.affine_inputs(x).double()
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    coef = w0 = torch.cat([model.affine.weight[0], model.affine.bias]).double()
    reg = ridge * len(a) * torch.eye(a1.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0
    for _ in range(iterations):
        weight = (delta / (goal - a1 @ coef).abs().clamp_min(1e-12)).clamp(max=1.0)  # Huber's IRLS weights
        aw = a1 * weight[:, None]
        shrink = reg * weight.mean()
        coef = torch.linalg.solve(aw.T @ a1 + shrink, aw.T @ goal + shrink @ w0)
    model.affine.weight.copy_(coef[:-1].float()[None, :])
    model.affine.bias.copy_(coef[-1:].float())
