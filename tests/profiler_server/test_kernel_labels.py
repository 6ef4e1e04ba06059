"""Kernel labels: a measurement that already left out its layout conversions is not corrected twice."""

from __future__ import annotations

import numpy as np

from profiler_server.predictor.kernel_predictor import fit_kernel_predictor
from shared.kernel_space import sample_kernels
from shared.kernels import KernelConfig, kernel_costs


def formula_ms(cfg: KernelConfig) -> float:
    ops, inp, out, weights = kernel_costs(cfg)
    return 0.02 + 2e-6 * ops + 1e-6 * (inp + out + weights)


def test_reorders_excluded_rows_keep_their_conversions_out_of_the_label_once() -> None:
    """At the x86 level a conv's one-kernel model has conversions around it. Rows measured without
    them (as agents now measure kernels) must train a conv model that predicts the measured figure;
    the same rows taken as raw measurements lose the predicted conversions on top."""
    kernels = sample_kernels(160, seed=2, reorders=True)
    latencies = [formula_ms(k) for k in kernels]
    excluded = fit_kernel_predictor(kernels, latencies, level="all", reorders_excluded=[True] * len(kernels))
    raw = fit_kernel_predictor(kernels, latencies, level="all")
    convs = [k for k in kernels if k.op == "conv"]
    assert len(convs) >= 10 and "reorder" in excluded.kinds
    truth = np.array([formula_ms(k) for k in convs]) - excluded.overhead_ms
    pred_excluded = np.array(excluded.predict_configs(convs)[0], dtype=float)
    pred_raw = np.array(raw.predict_configs(convs)[0], dtype=float)
    assert np.median(np.abs(pred_excluded / truth - 1)) < 0.10
    assert np.median(pred_raw) < np.median(pred_excluded)  # the conversions came off a second time
    assert excluded.metrics["reorders_excluded"] == len({k.key() for k in kernels})
