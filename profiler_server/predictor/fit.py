"""Fit the shared 5-layer latency MLP on measured block configs.

Recipe: features from :func:`shared.encoding.encode_blocks`, standardized inside the model
(``LatencyMLP.set_normalization``); the loss is a Huber loss on *log* latency, i.e. on relative
error, quadratic up to ``huber_delta`` and linear beyond it, so that a label inflated by a slow
burst of a shared device pulls the fit less than a squared error would; Adam with a decaying
learning rate; early stopping on a validation split. The served predictor is a k-fold ensemble:
the training configs are cut into ``members`` folds, each member is trained on all folds but one
and stops early on that one, and the members' log-latencies are averaged, so every measured config
trains and every member is validated. The held-out test split is chosen by config hash
(``cfg.key()``), so a config measured twice never sits on both sides and the split of a config does
not change when more data arrives. Everything is seeded.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from profiler_server.predictor import accuracy as M
from shared.api import Statistic
from shared.config import AnyBlock, parse_block
from shared.encoding import FEATURE_NAMES, encode_blocks
from shared.predictor import LatencyEnsemble, LatencyMLP, Predictor

log = logging.getLogger(__name__)


class NotEnoughData(ValueError):
    """Too few distinct measured configs to fit and judge a predictor."""


class FitStopped(RuntimeError):
    """The fit was asked to stop (the server is shutting down) before it finished."""


@dataclass
class Dataset:
    """One row per distinct config: the lowest of its measurements (see ``prepare_dataset``)."""

    configs: list[AnyBlock]
    keys: list[str]
    x: torch.Tensor  # (N, F) raw features
    y_ms: np.ndarray  # (N,)
    noise: dict


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict:
        return {"n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test)}


@dataclass
class FitResult:
    model: Predictor
    metrics: dict
    split: Split
    data: Dataset
    feature_ranges: dict
    test_pred_ms: np.ndarray
    history: dict = field(default_factory=dict)




@dataclass(frozen=True)
class TrainSettings:
    # The per-config latency the predictor learns. p10 by default: interference on a shared device
    # only ever adds time, so the low percentile is what it disturbs least (on the shared 2-core
    # host, a config measured again agrees within 10 % in 96 % of cases for p10, 87 % for the median).
    statistic: Statistic = "p10_ms"
    hidden: int = 128  # 256 fits no better here (the gap is generalization) and serves 4x slower
    n_layers: int = 5
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 128
    max_epochs: int = 800
    patience: int = 80
    max_seconds: float = 60.0  # the whole fit, every ensemble member included
    # Output = per-kind affine on the log analytic costs + MLP correction (shared.predictor); the
    # affine part starts at its ridge least-squares fit and the MLP at zero (bench_learning_curve).
    cost_affine: bool = True
    ridge: float = 1e-2
    # k-fold ensemble (1: a single MLP stopping early on the validation split), see the module doc
    # and bench_learning_curve for what it buys over one network at 200-3,200 training configs.
    members: int = 5
    # "huber" (on log ms, in log units: 0.1 ~ 10 %) or "mse"
    loss: str = "huber"
    huber_delta: float = 0.1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}")
        if self.loss not in ("huber", "mse"):
            raise ValueError(f"unknown loss {self.loss!r}; use 'huber' or 'mse'")


def prepare_dataset(configs: Sequence[AnyBlock | dict], latencies_ms: Sequence[float]) -> Dataset:
    """Parse, group repeated configs and encode. A config measured in several sessions is labelled
    with its lowest latency: interference on a shared device only ever adds time, so the least
    disturbed session is the closest to the device's own figure (a slow burst during one session
    was the main source of labels off by > 10 %)."""
    if len(configs) != len(latencies_ms):
        raise ValueError(f"{len(configs)} configs but {len(latencies_ms)} latencies")
    groups: dict[str, list[float]] = defaultdict(list)
    by_key: dict[str, AnyBlock] = {}
    all_keys = []
    for raw, ms in zip(configs, latencies_ms, strict=True):
        cfg = parse_block(raw) if isinstance(raw, dict) else raw
        key = cfg.key()
        by_key.setdefault(key, cfg)
        groups[key].append(float(ms))
        all_keys.append(key)
    keys = sorted(groups)
    cfgs = [by_key[k] for k in keys]
    y = np.array([min(groups[k]) for k in keys], dtype=np.float64)
    noise = M.noise_floor(all_keys, [float(v) for v in latencies_ms])
    return Dataset(configs=cfgs, keys=keys, x=encode_blocks(cfgs), y_ms=y, noise=noise)


def _bucket(key: str, seed: int) -> float:
    """Deterministic uniform number in [0, 1) from a config hash and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_key(keys: Sequence[str], seed: int = 0, test_frac: float = 0.15, val_frac: float = 0.1) -> Split:
    u = np.array([_bucket(k, seed) for k in keys])
    test = np.flatnonzero(u < test_frac)
    val = np.flatnonzero((u >= test_frac) & (u < test_frac + val_frac))
    train = np.flatnonzero(u >= test_frac + val_frac)
    return Split(train=train, val=val, test=test)


_H, _W, _PATCH = (FEATURE_NAMES.index(name) for name in ("h", "w", "patch"))


def range_features(x: torch.Tensor) -> torch.Tensor:
    """What the ``extrapolated`` flag checks: every encoded feature plus a joint one, the log-scale
    number of positions a block works on (pixels; tokens for MHSA). Each of h, w and patch can lie
    in its trained range while their combination does not (a 1,024-token MHSA when training
    stopped at 512)."""
    grid = x[:, _H] + x[:, _W] - 2 * x[:, _PATCH]
    return torch.cat([x, grid[:, None]], dim=1)


def feature_ranges(configs: Sequence[AnyBlock], x: torch.Tensor) -> dict:
    """Per kind, the min and max of every range feature seen in training (``range_features``)."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, cfg in enumerate(configs):
        by_kind[cfg.kind].append(i)
    x = range_features(x)
    return {
        kind: {"min": x[idx].min(0).values.tolist(), "max": x[idx].max(0).values.tolist(), "n": len(idx)}
        for kind, idx in sorted(by_kind.items())
    }


def train_mlp(
    x_train: torch.Tensor,
    y_train_ms: np.ndarray,
    x_val: torch.Tensor,
    y_val_ms: np.ndarray,
    seed: int = 0,
    settings: TrainSettings = TrainSettings(),
    stop: threading.Event | None = None,
) -> tuple[LatencyMLP, dict]:
    """Adam on standardized log latency; keeps the weights of the best validation epoch. Raises
    FitStopped at the next epoch once ``stop`` is set."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LatencyMLP(n_features=x_train.shape[1], hidden=settings.hidden, n_layers=settings.n_layers,
                       cost_affine=settings.cost_affine)
    log_train = torch.log(torch.as_tensor(y_train_ms, dtype=torch.float32))
    log_val = torch.log(torch.as_tensor(y_val_ms, dtype=torch.float32))
    model.set_normalization(x_train, log_train)
    target = (log_train - model.y_mean) / model.y_std
    target_val = (log_val - model.y_mean) / model.y_std
    if settings.cost_affine:
        _start_from_affine(model, x_train, target, settings.ridge)
    loss_fn = _loss(settings, float(model.y_std))
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=settings.max_epochs, eta_min=settings.lr / 50
    )
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    start, epoch = time.monotonic(), 0
    for epoch in range(settings.max_epochs):
        if stop is not None and stop.is_set():
            raise FitStopped(f"stopped at epoch {epoch}")
        model.train()
        for idx in torch.randperm(len(target), generator=gen).split(settings.batch_size):
            loss = loss_fn(model.forward_normalized(x_train[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        val_loss = _eval_loss(model, x_val, target_val, loss_fn) if len(target_val) else float(loss)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        if epoch - best[1] >= settings.patience or time.monotonic() - start > settings.max_seconds:
            break
    model.load_state_dict(best[2])
    model.eval()
    history = {
        "epochs": epoch + 1,
        "best_epoch": best[1],
        "best_val_loss": best[0],
        "seconds": time.monotonic() - start,
    }
    log.info("trained latency MLP: %s", history)
    return model, history


def _loss(settings: TrainSettings, y_std: float):
    """The training and validation loss on standardized log latency (``y_std``: its scale)."""
    if settings.loss == "mse":
        return torch.nn.functional.mse_loss
    delta = settings.huber_delta / max(y_std, 1e-6)
    return lambda pred, target: torch.nn.functional.huber_loss(pred, target, delta=delta)


def kfold(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint, seeded folds of ``range(n)`` whose sizes differ by at most one."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def train_ensemble(
    x: torch.Tensor,
    y_ms: np.ndarray,
    seed: int = 0,
    settings: TrainSettings = TrainSettings(),
    stop: threading.Event | None = None,
) -> tuple[LatencyEnsemble, dict]:
    """One member per fold of (``x``, ``y_ms``): trained on the other folds, stopped early on its
    own (see the module doc). ``settings.max_seconds`` bounds the whole fit: each member gets its
    share, so an ensemble trains no longer than one network did (a loaded host's `make demo` fit)."""
    if len(y_ms) < 2 * settings.members:
        raise NotEnoughData(f"{len(y_ms)} training configs for {settings.members} folds; measure more")
    per_member = replace(settings, max_seconds=settings.max_seconds / settings.members)
    members, histories = [], []
    for k, fold in enumerate(kfold(len(y_ms), settings.members, seed)):
        rest = np.setdiff1d(np.arange(len(y_ms)), fold)
        member, history = train_mlp(x[rest], y_ms[rest], x[fold], y_ms[fold], seed * settings.members + k,
                                    per_member, stop)
        members.append(member)
        histories.append(history)
    model = LatencyEnsemble(members).eval()
    return model, {"epochs": sum(h["epochs"] for h in histories),
                   "seconds": sum(h["seconds"] for h in histories),
                   "members": histories}


def train_predictor(
    data: Dataset, split: Split, seed: int = 0, settings: TrainSettings = TrainSettings(),
    stop: threading.Event | None = None,
) -> tuple[Predictor, dict, np.ndarray]:
    """The served recipe on ``split``: a k-fold ensemble over train + validation, or with
    ``members=1`` one MLP stopping early on validation. Returns the model, its training history and
    the indices of the configs it was trained on."""
    if settings.members == 1:
        model, history = train_mlp(data.x[split.train], data.y_ms[split.train], data.x[split.val],
                                   data.y_ms[split.val], seed, settings, stop)
        return model, history, split.train
    fit_idx = np.concatenate([split.train, split.val])
    model, history = train_ensemble(data.x[fit_idx], data.y_ms[fit_idx], seed, settings, stop)
    return model, history, fit_idx


@torch.no_grad()
def _start_from_affine(model: LatencyMLP, x: torch.Tensor, target: torch.Tensor, ridge: float) -> None:
    """Set the affine part to its ridge least-squares fit of ``target`` and the MLP's last layer to
    zero: training starts from the cost model and learns the correction."""
    a = model.affine_inputs(x).double()
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    reg = ridge * len(a) * torch.eye(a1.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    coef = torch.linalg.solve(a1.T @ a1 + reg, a1.T @ target.double())
    model.affine.weight.copy_(coef[:-1].float()[None, :])
    model.affine.bias.copy_(coef[-1:].float())
    last = model.net[-1]
    last.weight.zero_()
    last.bias.zero_()


@torch.no_grad()
def _eval_loss(model: LatencyMLP, x: torch.Tensor, target: torch.Tensor, loss_fn) -> float:
    model.eval()
    return float(loss_fn(model.forward_normalized(x), target))


@torch.no_grad()
def predict_ms(model: Predictor, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(x).double().numpy()


# (data, split, seed, stop) -> (model, training history, indices of the configs it learned from)
Trainer = Callable[[Dataset, Split, int, threading.Event | None], tuple[Predictor, dict, np.ndarray]]


def ranking(mlp_mape: float, peers: dict[str, dict]) -> dict:
    """``{"winner": name of the lowest test MAPE ("mlp" or a peer), "beaten_by": peers that beat the
    served MLP on the same split}``: a served predictor that loses to a peer says so."""
    scores = {"mlp": mlp_mape, **{name: p["mape"] for name, p in peers.items()}}
    return {"winner": min(scores, key=scores.get),
            "beaten_by": sorted((n for n, v in scores.items() if n != "mlp" and v < mlp_mape), key=scores.get)}


def fit_predictor(
    configs: Sequence[AnyBlock | dict],
    latencies_ms: Sequence[float],
    seed: int = 0,
    settings: TrainSettings = TrainSettings(),
    with_peers: bool = True,
    min_configs: int = 20,
    stop: threading.Event | None = None,
    trainer: Trainer | None = None,
    base: Predictor | None = None,
) -> FitResult:
    """Fit on the train split, stop early on validation, judge on the held-out test split.
    ``trainer``: how the model is trained on the split (default: the served recipe,
    ``train_predictor`` with ``settings``; ``adapt.adapting(base)`` adapts a predictor of another
    device class); ``base``: a predictor whose own error on the same test split is reported beside
    (``base_mape``: what adapting bought)."""
    data = prepare_dataset(configs, latencies_ms)
    if len(data.keys) < min_configs:
        raise NotEnoughData(f"{len(data.keys)} distinct measured configs; need at least {min_configs} to fit")
    split = split_by_key(data.keys, seed)
    if len(split.test) == 0 or len(split.val) == 0:
        raise NotEnoughData(f"{len(data.keys)} configs leave an empty validation or test split; measure more")
    if trainer is None:
        model, history, fit_idx = train_predictor(data, split, seed, settings, stop)
    else:
        model, history, fit_idx = trainer(data, split, seed, stop)
    truth = data.y_ms[split.test]
    test_pred = predict_ms(model, data.x[split.test])
    metrics = {
        **M.accuracy_report(test_pred, truth),
        **split.sizes(),
        "noise_floor": data.noise,
        "epochs": history["epochs"],
        "train_seconds": history["seconds"],
    }
    if base is not None:  # what adapting bought
        metrics["base_mape"] = M.mape(predict_ms(base, data.x[split.test]), truth)
    if "chosen" in history:  # an adaptation: which candidate the new measurements chose
        metrics["adaptation"] = {"chosen": history["chosen"], "pooled_mape": history["pooled_mape"]}
    if isinstance(model, LatencyEnsemble):  # what averaging bought over each member alone
        metrics["members"] = len(model.members)
        metrics["member_mape"] = [M.mape(predict_ms(m, data.x[split.test]), truth) for m in model.members]
    if with_peers:
        from profiler_server.predictor.peers import evaluate_peers

        metrics["peers"] = evaluate_peers(data, split, seed)
        metrics.update(ranking(metrics["mape"], metrics["peers"]))
    ranges = feature_ranges([data.configs[i] for i in fit_idx], data.x[fit_idx])
    return FitResult(
        model=model,
        metrics=metrics,
        split=split,
        data=data,
        feature_ranges=ranges,
        test_pred_ms=test_pred,
        history=history,
    )
