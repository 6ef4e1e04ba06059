"""Fit the network-level correction of one predictor version (see ``shared.network_correction``).

Training data: every network the farm measured together with its block list, labelled like block
configs with the lowest of its measurements (interference only ever adds time). Each candidate model
of ``MODELS`` is fitted on the *relative* error (rows divided by the measurement), so a 2 ms network
weighs like a 200 ms one, and on its absolute value (MAPE, the figure it is chosen by), so a few
labels caught by a slow stretch of a shared device do not steer it. The model is chosen by leave-one-out error on the measured
networks (each network predicted by the model fitted without it), and those leave-one-out figures
are what the version reports; a model must beat the plain sum there to be served. With fewer than
``MIN_NETWORKS`` networks the plain sum is served, and the correction says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from profiler_server.predictor import accuracy as M
from shared.network_correction import MODELS, NetworkCorrection

MIN_NETWORKS = 8
RIDGE = 1e-6  # relative to the mean squared column: keeps collinear features (few networks) solvable
IRLS_STEPS = 30
IRLS_FLOOR = 1e-4  # relative errors below 0.01 % weigh as 0.01 %


def _solve(a: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Coefficients minimizing Σ|(a @ c - m) / m| (the MAPE the model is chosen by), by iteratively
    reweighted least squares from the least-squares start: a network caught by a slow stretch of a
    shared device (its label 2-3x too high) pulls a squared loss far more than an absolute one."""
    rows = a / measured[:, None]
    scale = np.sqrt((rows**2).mean(axis=0)) + 1e-12
    z = rows / scale
    ridge = RIDGE * len(z) * np.eye(z.shape[1])
    weights = np.ones(len(z))
    for _ in range(IRLS_STEPS):
        coef = np.linalg.solve(z.T @ (weights[:, None] * z) + ridge, z.T @ weights)
        weights = 1.0 / np.maximum(np.abs(z @ coef - 1.0), IRLS_FLOOR)
    return coef / scale


def _design(features: Sequence[dict[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.array([[f[n] for n in names] for f in features], dtype=np.float64)


def _leave_one_out(a: np.ndarray, measured: np.ndarray) -> np.ndarray | None:
    """Each network predicted by the fit on the others; None when a fit gives the sum a weight <= 0
    (a correction must grow with the blocks' predicted time, or the search would be pushed backwards)."""
    out = np.empty(len(measured))
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        coef = _solve(a[keep], measured[keep])
        if coef[0] <= 0:
            return None
        out[i] = a[i] @ coef
    return out


def fit_network_correction(
    features: Sequence[dict[str, float]], measured_ms: Sequence[float], revision: int = 0,
    min_networks: int = MIN_NETWORKS, n_unstable: int = 0,
) -> NetworkCorrection:
    """Choose and fit the correction on networks' ``aggregate_features`` (with ``sum_ms`` from the
    version's own block predictions) and their measured latency. ``n_unstable``: networks left out
    because every measurement of theirs was flagged unstable (reported, not used)."""
    measured = np.asarray(measured_ms, dtype=np.float64)
    n = len(measured)
    if n < min_networks:
        left_out = f" ({n_unstable} more measured only unstably, left out)" if n_unstable else ""
        return NetworkCorrection(n_networks=n, n_unstable=n_unstable, revision=revision,
                                 fallback=f"{n} measured networks with block lists{left_out}; a correction needs "
                                          f"at least {min_networks}: the plain sum is served")
    sums = _design(features, ["sum_ms"])[:, 0]
    heldout = {"sum": _figures(sums, measured)}
    for name, names in MODELS.items():
        if not names or len(names) >= n - 1:
            continue
        pred = _leave_one_out(_design(features, names), measured)
        if pred is not None:
            heldout[name] = _figures(pred, measured)
    best = min(heldout, key=lambda k: heldout[k]["mape"])
    if best == "sum":
        return NetworkCorrection(n_networks=n, n_unstable=n_unstable, revision=revision, heldout=heldout,
                                 fallback="no fitted model beat the plain sum on held-out networks")
    names = MODELS[best]
    coef = _solve(_design(features, names), measured)
    return NetworkCorrection(model=best, coef=dict(zip(names, coef.tolist(), strict=True)), n_networks=n,
                             n_unstable=n_unstable, revision=revision, heldout=heldout)


def _figures(pred: np.ndarray, measured: np.ndarray) -> dict:
    return {"mape": M.mape(pred, measured), "within_10": M.within(pred, measured, 0.10)}
