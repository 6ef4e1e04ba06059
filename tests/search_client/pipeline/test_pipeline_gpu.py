"""Every phase on a CUDA device (marked gpu, skipped without one)."""

from __future__ import annotations

import math

import pytest
import torch

from search_client.pipeline.context import PipelineContext
from search_client.pipeline.runner import run_phases
from search_client.remote import FetchedPredictor, ProfilerClient
from search_client.train.ddp import init_distributed
from tests.search_client.pipeline.tiny import tiny_settings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_pretrain_search_derive_finetune_and_eval_run_on_cuda(tmp_path, tiny_data, proxy_predictor):
    settings = tiny_settings(tmp_path, tiny_data, search_iters=2, measure=False, device="cuda")
    ctx = PipelineContext(settings, client=ProfilerClient("http://127.0.0.1:9"), dist=init_distributed("cuda"))
    ctx._predictor = FetchedPredictor(proxy_predictor, {}, 1, 1, "host/test-cpu", "onnxruntime", tmp_path / "p")
    state = run_phases(ctx, "eval")
    for phase in ("pretrain", "search", "finetune"):
        assert next(ctx.cache["trained"][phase].parameters()).is_cuda, phase
    assert state.result("derive")["equivalence_max_abs_diff"] <= 1e-3
    assert math.isfinite(state.result("eval")["miou"]) and math.isfinite(state.result("search")["terms"]["loss"])
