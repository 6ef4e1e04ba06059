"""The check of trained weights against the untrained candidate of the same architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_client.pipeline.context import PipelineContext
from search_client.pipeline.finish import denormal_weights, trained_weights_check
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
    out = trained_weights_check(ctx, net, trained_ms=10.4, untrained_ms=10.0, statistic="p10_ms")
    assert set(out) == {"trained_vs_untrained", "denormal_weights"}  # no re-measurement, no ratio
    assert out["trained_vs_untrained"] == pytest.approx(0.04) and out["denormal_weights"] == 0
