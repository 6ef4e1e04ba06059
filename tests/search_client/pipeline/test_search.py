import math
from pathlib import Path

import pytest
import torch

from search_client.pipeline.context import PipelineContext, load_weights
from search_client.pipeline.runner import run_phases
from search_client.pipeline.search import LatencyTerm, search_parts, search_student
from search_client.pipeline.training import PhaseInterrupted
from search_client.remote import FetchedPredictor, ProfilerClient
from search_client.train import Trainer
from search_client.train.metrics_log import read_metrics
from tests.search_client.pipeline.tiny import LATENCY_SIZE, tiny_settings


def _context(tmp_path: Path, data: Path, predictor, **kw) -> PipelineContext:
    # An unreachable server: the search must not need it once the predictor is in hand.
    ctx = PipelineContext(tiny_settings(tmp_path, data, **kw), client=ProfilerClient("http://127.0.0.1:9"))
    ctx._predictor = FetchedPredictor(predictor, {}, 1, 1, "host/test-cpu", "onnxruntime", tmp_path / "p")
    return ctx


def _pretrained(ctx: PipelineContext) -> dict:
    run_phases(ctx, "pretrain")
    return load_weights(ctx.state.result("pretrain")["model"])


def test_search_step_returns_named_terms_weighted_as_the_paper(tmp_path, tiny_data, proxy_predictor):
    ctx = _context(tmp_path, tiny_data, proxy_predictor, pretrain_iters=0)
    student = search_student(ctx, _pretrained(ctx))
    teacher = ctx.pretrained_supernet()
    latency = LatencyTerm(student, proxy_predictor, target_ms=0.5, size=LATENCY_SIZE, mode="two-sided")
    train_set, _ = ctx.datasets()
    trainer = Trainer(ctx.cfg, tmp_path / "step", student, train_set,
                      parts=search_parts(ctx, student, teacher, latency), iterations=1, progress=False)
    images, labels = next(iter(trainer.loader()))
    terms = trainer.train_step(images, labels)
    assert {"loss", "task", "aux", "distill", "latency"} <= set(terms)
    s = ctx.cfg.search
    expected = terms["task"] + s.aux_weight * terms["aux"] + s.distill_weight * terms["distill"] \
        + s.latency_weight * terms["latency"]
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    assert all(math.isfinite(v) for v in terms.values())
    assert terms["latency"] == pytest.approx(abs(latency.last_ms / 0.5 - 1), rel=1e-5)
    # each term's share of the loss: L, β·Lreg, γ·Laux, λ·Ld (latency_ms is a weight-0 curve: no share)
    shares = {k: v for k, v in terms.items() if k.startswith("share_")}
    assert set(shares) == {"share_task", "share_aux", "share_distill", "share_latency"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["share_distill"] == pytest.approx(s.distill_weight * terms["distill"] / terms["loss"], rel=1e-5)


def test_latency_term_gradient_reaches_gumbel_logits_and_gates(tmp_path, tiny_data, proxy_predictor):
    ctx = _context(tmp_path, tiny_data, proxy_predictor, pretrain_iters=0)
    student = search_student(ctx, _pretrained(ctx))
    term = LatencyTerm(student, proxy_predictor, target_ms=0.01, size=LATENCY_SIZE, mode="one-sided")
    term(None).backward()
    logits = torch.stack([p.grad for p in student.arch_parameters()])  # (blocks, 3): skip, lir, mhsa
    # Over the target: choosing skip lowers latency, so its logit's gradient is negative (descent raises it).
    assert (logits[:, 0] < 0).all() and (logits[:, 1:] > 0).any()
    gate_grads = [p.grad for p in student.gate_parameters()]
    assert all(g is not None and (g > 0).any() for g in gate_grads)  # fewer channels -> lower latency


def _final_search_state(ctx: PipelineContext) -> dict[str, torch.Tensor]:
    state = load_weights(ctx.state.result("search")["model"])
    return {k: v for k, v in state.items() if "arch_logits" in k or "gate" in k or k.endswith("head.cls.weight")}


def test_search_resumed_after_a_kill_ends_where_an_uninterrupted_one_does(tmp_path, tiny_data, proxy_predictor):
    straight = _context(tmp_path / "a", tiny_data, proxy_predictor)
    run_phases(straight, "search")
    killed = _context(tmp_path / "b", tiny_data, proxy_predictor)
    killed.max_steps = 3  # search runs 4 steps with a checkpoint every 2: killed after step 3
    with pytest.raises(PhaseInterrupted):
        run_phases(killed, "search")
    assert killed.state.done("pretrain") and not killed.state.done("search")
    resumed = _context(tmp_path / "b", tiny_data, proxy_predictor)
    run_phases(resumed, "search")
    a, b = _final_search_state(straight), _final_search_state(resumed)
    assert a.keys() == b.keys() and len(a) > 5
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    ra, rb = straight.state.result("search"), resumed.state.result("search")
    assert ra["terms"] == pytest.approx(rb["terms"], rel=1e-6)
    assert rb["http_calls_during_search"] == 0
    # the phase's metrics file logs the shares of every row; the result keeps their mean over the phase
    rows = read_metrics(resumed.state.phase_dir("search"))
    assert len(rows) == 4 and all(sum(v for k, v in r.items() if k.startswith("share_")) == pytest.approx(1.0)
                                  for r in rows)
    assert set(rb["loss_shares"]) == {"task", "aux", "distill", "latency"}
    assert sum(rb["loss_shares"].values()) == pytest.approx(1.0)


def test_derive_with_the_farm_unreachable_skips_the_measured_calibration(tmp_path, tiny_data, proxy_predictor):
    ctx = _context(tmp_path, tiny_data, proxy_predictor, pretrain_iters=0, search_iters=1, measure=True)
    said: list[str] = []
    ctx.say = said.append
    state = run_phases(ctx, "derive")
    assert state.result("derive")["calibration"] == []
    assert any("calibration skipped" in line for line in said)


def test_gmacs_target_regularizes_the_search_and_holds_the_derived_network(tmp_path, tiny_data, proxy_predictor):
    """--target-gmacs: the search's regularizer term is the GMACs one, and the derived network's
    analytic GMACs at the counting size land within the tolerance of the target."""
    from search_client.count import count_model, count_module

    probe = _context(tmp_path / "probe", tiny_data, proxy_predictor, pretrain_iters=0)
    with torch.no_grad():
        full = count_module(probe.build_supernet(), 128, 256)["gmacs"]
    target = 0.4 * full
    ctx = _context(tmp_path / "run", tiny_data, proxy_predictor, pretrain_iters=0, search_iters=2, measure=False,
                   target_gmacs=target, gmacs_height=128, gmacs_width=256)  # fmt: skip
    state = run_phases(ctx, "derive")
    search, derived = state.result("search"), state.result("derive")
    assert "gmacs" in search["terms"] and "latency" not in search["terms"]
    assert search["target_gmacs"] == target and derived["fit"]["within"]
    counted = count_model("subnet", 128, 256, num_classes=derived["spec"]["num_classes"],
                          spec=derived["spec"])
    assert counted["gmacs"] == pytest.approx(target, rel=ctx.settings.target_tolerance)
