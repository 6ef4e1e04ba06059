"""One latency statistic from end to end: how a run turns measurement jobs into one figure.

Every figure a run compares with its target (derive calibrations, the final network, the supernet)
is the same per-job statistic the predictor learned: the p10 of a job's runs by default. On a shared
host interference only ever adds time, so a job's median is bimodal (two back-to-back jobs of one
network gave medians 11.3 and 15.1 ms) while its p10 stays put (10.6 and 10.9 ms). A network
measured in several jobs gets the median of their per-job statistic; the per-job medians are kept
beside it.

A network is measured as its batch-1 ONNX export with one fixed input (:func:`export_input`), the
same file the export phase writes, so every measurement of a run sees the same graph.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import nn

from search_client.pipeline.context import PipelineContext
from search_client.search.latency import network_blocks
from shared.api import MeasurementSummary
from shared.export import export_module_onnx

DEFAULT_STATISTIC = "p10_ms"


def predictor_statistic(meta: dict) -> str:
    """The per-config statistic a fetched predictor learned (its fit metrics record it)."""
    return (meta.get("metrics") or {}).get("statistic") or DEFAULT_STATISTIC


def summarize_jobs(jobs: Sequence[MeasurementSummary], statistic: str) -> dict:
    """``{"ms": median over jobs of their ``statistic``, "median_ms": median of their medians,
    "repeats_ms": per-job statistic, "repeats_median_ms", "repeat_spread", "statistic"}``."""
    if not jobs:
        raise ValueError("no measurement jobs to summarize")
    values = [float(getattr(j, statistic)) for j in jobs]
    medians = [float(j.median_ms) for j in jobs]
    ms = statistics.median(values)
    return {"ms": ms, "median_ms": statistics.median(medians), "statistic": statistic,
            "repeats_ms": values, "repeats_median_ms": medians, "repeat_spread": (max(values) - min(values)) / ms}


def export_input(size: tuple[int, int]) -> torch.Tensor:
    """The fixed batch-1 input networks are exported (and checked) with."""
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))


def export_onnx(model: nn.Module, x: torch.Tensor) -> bytes:
    return export_module_onnx(model, (x,))


def measure_network(ctx: PipelineContext, model: nn.Module, name: str, repeats: int, statistic: str,
                    fresh: bool = False) -> dict:
    """``repeats`` jobs of ``model`` on the run's target device (batch 1, exported from the CPU:
    ``model`` moves there), summarized by :func:`summarize_jobs`. The upload carries the network's
    block list, so every network a run measures trains the predictor's network-level correction.
    ``fresh``: measure now even when the same network was measured before."""
    client = ctx.require_client()
    onnx_bytes = export_onnx(model.cpu(), export_input(ctx.latency_size))
    blocks = network_blocks(model, *ctx.latency_size)  # trains the predictor's network-level correction
    jobs = []
    for i in range(repeats):
        job = client.upload_network(onnx_bytes, ctx.device_class, ctx.settings.runtime, name, repeat=fresh or i > 0,
                                    blocks=blocks)
        jobs.append(client.wait_job(job.job_id))
    return summarize_jobs(jobs, statistic)
