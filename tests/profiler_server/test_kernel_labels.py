"""Kernel labels: a measurement that already left out its layout conversions is not corrected twice;
node-time labels bring the call and per-node costs a whole model pays."""

from __future__ import annotations

import numpy as np
import pytest

from profiler_server.predictor.kernel_predictor import RunGap, fit_kernel_predictor, run_gap
from shared.kernel_space import sample_kernels
from shared.kernels import Decomposition, Kernel, KernelConfig, kernel_costs


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


def test_node_time_labels_predict_a_model_with_its_call_and_per_node_costs() -> None:
    """Node-time rows (a profiling runner's) are the kernel alone: no overhead comes off them, wall
    rows of older agents are left out, and a whole model adds the call and a per-node cost fitted
    from the runs' time outside any node (here 30 µs per call and 4 µs per node, with a few runs a
    busy host stretched), apart from what a lone kernel's fresh output costs."""
    kernels = sample_kernels(160, seed=3, reorders=True)
    latencies = [formula_ms(k) for k in kernels]
    rng = np.random.default_rng(0)
    # a lone kernel's output is allocated fresh each run: 0.05 ms per million output elements here
    gaps = [RunGap(0.030 + 0.004 * n + 0.05 * kernel_costs(k)[2] / 1e6 + (0.2 if rng.random() < 0.1 else 0.0), n)
            for k, n in zip(kernels, rng.integers(1, 5, len(kernels)), strict=True)]
    wall_rows = [KernelConfig(op="softmax", fn="Softmax", dims=(8, 8 + i)) for i in range(30)]
    predictor = fit_kernel_predictor([*kernels, *wall_rows], latencies + [50.0] * 30, level="all",
                                     run_gaps=[*gaps, *[None] * 30])
    assert predictor.overhead_ms == pytest.approx(0.030, abs=1e-3)
    assert predictor.dispatch_ms == pytest.approx(0.004, abs=3e-4)
    assert predictor.metrics["node_times"] and predictor.metrics["n_kernels"] == len({k.key() for k in kernels})
    convs = [k for k in kernels if k.op == "conv"]
    pred = np.array(predictor.predict_configs(convs)[0], dtype=float)
    assert np.median(np.abs(pred / np.array([formula_ms(k) for k in convs]) - 1)) < 0.10  # nothing subtracted
    model = Decomposition(kernels=[Kernel(nodes=[f"n{i}"], op_types=["Conv"], config=c) for i, c in enumerate(convs[:5])],
                          free=[{"node": "r", "op_type": "Reshape"}])
    total = predictor.predict(model)["total_ms"]
    assert total == pytest.approx(0.030 + 6 * 0.004 + sum(predictor.predict_configs(convs[:5])[0]), rel=1e-3)


def test_run_gap_reads_only_a_profiling_runners_flags() -> None:
    assert run_gap(["clock=ort-node", "run_gap_ms=0.01200", "run_nodes=3"]) == RunGap(0.012, 3)
    assert run_gap(["clock=wall", "run_gap_ms=0.01200", "run_nodes=3"]) is None
    assert run_gap(["clock=ort-node"]) is None and run_gap(None) is None
