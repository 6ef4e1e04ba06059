"""Peer predictors judged on the same split as the MLP (what the literature uses instead).

- ``linear_macs``: log latency linear in log MACs (the FLOPs proxy many NAS papers use);
- ``random_forest``: nn-Meter-style random forest on the same features as the MLP;
- ``lookup_table``: OFA-style table, a config's latency is that of the nearest measured config
  (standardized feature space).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor

from profiler_server.predictor import accuracy as M
from shared.encoding import FEATURE_NAMES

MACS_COLUMN = FEATURE_NAMES.index("macs")


def _linear_macs(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    coef = np.polyfit(x_train[:, MACS_COLUMN], np.log(y_train), deg=1)
    return np.exp(np.polyval(coef, x_test[:, MACS_COLUMN]))


def _random_forest(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=1, random_state=seed, n_jobs=1)
    forest.fit(x_train, np.log(y_train))
    return np.exp(forest.predict(x_test))


def _lookup_table(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    table = KNeighborsRegressor(n_neighbors=1).fit((x_train - mean) / std, y_train)
    return table.predict((x_test - mean) / std)


PEERS = {"linear_macs": _linear_macs, "random_forest": _random_forest, "lookup_table": _lookup_table}


def peer_predictions(data, split, seed: int = 0) -> dict[str, np.ndarray]:
    """Each peer fitted on train + validation (they have no early stopping), predicted on test."""
    fit_idx = np.concatenate([split.train, split.val])
    x = data.x.numpy().astype(np.float64)
    return {name: fn(x[fit_idx], data.y_ms[fit_idx], x[split.test], seed) for name, fn in PEERS.items()}


def evaluate_peers(data, split, seed: int = 0) -> dict[str, dict]:
    """``{name: {mape, within_10, within_5, rmspe}}`` on the held-out test split."""
    truth = data.y_ms[split.test]
    out = {}
    for name, pred in peer_predictions(data, split, seed).items():
        out[name] = {
            "mape": M.mape(pred, truth),
            "within_10": M.within(pred, truth, 0.10),
            "within_5": M.within(pred, truth, 0.05),
            "rmspe": M.rmspe(pred, truth),
        }
    return out
