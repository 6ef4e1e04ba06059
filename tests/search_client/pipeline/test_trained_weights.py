"""The check of trained weights against the untrained candidate of the same architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_client.pipeline.context import PipelineContext
from search_client.pipeline.finish import denormal_weights, trained_weights_check, wait_out_drift
from search_client.remote import ProfilerClient
from tests.search_client.pipeline.tiny import tiny_settings


def test_subnormal_weights_and_buffers_are_counted():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight.view(-1)[:5] = 1e-40  # subnormal in float32
        net[0].weight.view(-1)[5] = torch.finfo(torch.float32).tiny  # the smallest normal: not counted
        net[1].running_var.fill_(1e-39)
    assert denormal_weights(net) == 5 + 4


def test_a_trained_network_within_the_tolerance_costs_no_measurement(tmp_path, tiny_data):
    # nothing answers on port 9: a measurement would raise, so the check must not start one
    ctx = PipelineContext(tiny_settings(tmp_path, tiny_data), client=ProfilerClient("http://127.0.0.1:9"))
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    out = trained_weights_check(ctx, net, trained_ms=10.4, untrained_ms=10.0, statistic="p10_ms", target_ms=10.0)
    assert set(out) == {"trained_vs_untrained", "denormal_weights"}  # no re-measurement, no ratio
    assert out["trained_vs_untrained"] == pytest.approx(0.04) and out["denormal_weights"] == 0


def test_a_drifted_device_is_measured_again_until_a_pass_lands_near_the_derivation_figure():
    # run 2 of the demo's fresh-clone runs: the candidate measured 20.24 ms at derivation, the trained
    # network 22.86 ms and its untrained twin 22.94 ms at the end (the device ran slower)
    later = iter([22.50, 20.60, 19.0])
    out = wait_out_drift(lambda: next(later), 22.86, expected_ms=20.24 * 22.86 / 22.94, tolerance=0.1,
                         say=lambda _: None, passes=3, pause_s=0)
    assert out == {"measured_ms": 20.60, "drift_passes_ms": [22.86, 22.50, 20.60]}  # stops at 20.60: within 5 %


def test_a_slow_stretch_that_outlasts_the_passes_stays_in_the_figure_and_a_steady_device_costs_nothing():
    later = iter([23.5, 22.9])
    out = wait_out_drift(lambda: next(later), 23.0, expected_ms=20.0, tolerance=0.1, say=lambda _: None,
                         passes=2, pause_s=0)
    assert out == {"measured_ms": 22.9, "drift_passes_ms": [23.0, 23.5, 22.9]}
    steady = wait_out_drift(lambda: pytest.fail("measured again"), 20.9, expected_ms=20.0, tolerance=0.1)
    assert steady == {"measured_ms": 20.9, "drift_passes_ms": [20.9]}


def test_a_trained_network_that_misses_its_target_has_its_untrained_candidate_measured_again(tmp_path, tiny_data):
    # this session's demo run 2: candidate 16.94 ms, trained 18.27 ms (+7.9 %: like its candidate by the
    # tolerance), target 16.40 ms (+11.4 %: a miss). The check measures the derived candidate again: in a
    # run without a derive phase, reaching for that candidate is the attempt the test looks for.
    ctx = PipelineContext(tiny_settings(tmp_path, tiny_data), client=ProfilerClient("http://127.0.0.1:9"))
    with pytest.raises(Exception, match="phase 'derive' has not finished"):
        trained_weights_check(ctx, nn.Sequential(nn.Conv2d(3, 4, 3)), trained_ms=18.27, untrained_ms=16.94,
                              statistic="p10_ms", target_ms=16.40)
