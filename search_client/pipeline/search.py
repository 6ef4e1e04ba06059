"""The search phase: the training loop with the supernet as student, latency regularizer and boosters.

One step computes ``L + β·Lreg + γ·Laux + λ·Ld`` (named terms ``task``, ``aux``, ``latency``,
``distill``; ``loss`` is the weighted sum) and steps three optimizers: SGD on the weights, Adam on the
Gumbel logits (lr ≈ 3e-4, betas 0.5/0.999) and Adam on the DWBC gate weights. The regularizer runs the
predictor fetched before the loop through autograd, so no step sends an HTTP request.

Ld is Σ over pixels of KL(q_s ‖ q_t) on the main output and every aux head (direction and reduction
are ``search.distill_direction`` / ``search.distill_reduction``; see ``search_client.pipeline.distillation``).
Every logged step carries each weighted term's share of the loss (``share_task``, ``share_latency``,
``share_aux``, ``share_distill``) in ``<run>/search/metrics.jsonl`` and the log lines; the phase's
result keeps their mean (``loss_shares``), so a run shows whether a booster weighs anything.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from search_client.models.mixed_block import temperature_at
from search_client.pipeline.campaign import await_campaign_predictor
from search_client.pipeline.context import PipelineContext, load_weights
from search_client.pipeline.feasible import check_target, derivable_range
from search_client.pipeline.measuring import measure_network, predictor_statistic
from search_client.pipeline.training import TeacherDistill, train_phase
from search_client.remote import FetchedPredictor, RemoteError
from search_client.search.derive import derive
from search_client.search.latency import expected_gmacs, expected_latency, latency_loss, predicted_ms
from search_client.train import StepInputs, TrainParts, seed_everything
from shared.network_correction import PLAIN_SUM, NetworkCorrection
from shared.predictor import LatencyMLP

log = logging.getLogger(__name__)


@dataclass
class LatencyTerm:
    """β·Lreg: expected whole-network latency from the local predictor, relative to the target."""

    model: nn.Module
    predictor: LatencyMLP
    target_ms: float
    size: tuple[int, int]
    mode: str = "two-sided"
    correction: NetworkCorrection = field(default_factory=lambda: PLAIN_SUM)  # the predictor's network-level model (see expected_latency)
    last_ms: float = 0.0
    seconds: float = 0.0  # time spent here (forward; its backward is inside the step's backward)
    calls: int = 0

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        tic = time.perf_counter()
        expected = expected_latency(self.model, self.predictor, *self.size, self.correction)
        loss = latency_loss(expected, self.target_ms, self.mode)
        self.last_ms = float(expected.detach())
        self.seconds += time.perf_counter() - tic
        self.calls += 1
        return loss

    def expected_ms(self, inputs: StepInputs) -> torch.Tensor:
        """Logged with weight 0: the curve of the expected latency during the search."""
        return torch.tensor(self.last_ms, device=inputs.images.device)


@dataclass
class GmacsTerm:
    """β·Lreg on computation (Eq. 8's other choice): expected GMACs at ``size`` relative to the target,
    differentiable in the gates and the path probabilities."""

    model: nn.Module
    target_gmacs: float
    size: tuple[int, int]
    mode: str = "two-sided"
    last_gmacs: float = 0.0

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        expected = expected_gmacs(self.model, *self.size)
        self.last_gmacs = float(expected.detach())
        return latency_loss(expected, self.target_gmacs, self.mode)

    def expected_gmacs(self, inputs: StepInputs) -> torch.Tensor:
        """Logged with weight 0: the curve of the expected GMACs during the search."""
        return torch.tensor(self.last_gmacs, device=inputs.images.device)


@dataclass
class TemperatureHook:
    """Anneal the Gumbel temperature geometrically from ``start`` to ``end`` over the phase."""

    model: nn.Module
    start: float
    end: float
    name: str = "temperature"
    history: list[float] = field(default_factory=list)

    def before_step(self, trainer: object) -> None:
        tau = temperature_at(trainer.iteration, trainer.total, self.start, self.end)
        self.model.set_temperature(tau)
        self.history.append(tau)

    def after_step(self, trainer: object, terms: dict[str, float]) -> None:
        terms["tau"] = self.history[-1] if self.history else self.start


def search_student(ctx: PipelineContext, pretrained: dict[str, torch.Tensor]) -> nn.Module:
    """The pretrained supernet with DWBC gates and hard Gumbel sampling switched on."""
    student = ctx.build_supernet()
    student.load_state_dict(pretrained)
    student.install_gates(init=ctx.settings.gate_init)
    student.set_search(ctx.cfg.search.tau_start)
    return student


def _regularizer_terms(reg: LatencyTerm | GmacsTerm, weight: float) -> tuple[dict, dict]:
    if isinstance(reg, GmacsTerm):
        return {"gmacs": reg, "expected_gmacs": reg.expected_gmacs}, {"gmacs": weight, "expected_gmacs": 0.0}
    return {"latency": reg, "latency_ms": reg.expected_ms}, {"latency": weight, "latency_ms": 0.0}


def search_parts(
    ctx: PipelineContext, student: nn.Module, teacher: nn.Module, latency: LatencyTerm | GmacsTerm
) -> TrainParts:
    cfg, s = ctx.cfg, ctx.cfg.search
    weights = torch.optim.SGD(list(student.weight_parameters()), lr=cfg.train.lr, momentum=cfg.train.momentum,
                              weight_decay=cfg.train.weight_decay)
    arch = torch.optim.Adam(student.arch_parameters(), lr=s.arch_lr, betas=(0.5, 0.999))
    gates = torch.optim.Adam(student.gate_parameters(), lr=ctx.settings.gate_lr, betas=(0.5, 0.999))
    reg_terms, reg_weights = _regularizer_terms(latency, s.latency_weight)
    # The latency term reaches the gates and path logits outside the forward: averaged by the trainer.
    reached = {id(p) for p in (*student.arch_parameters(), *student.gate_parameters())}
    outside = tuple(n for n, p in student.named_parameters() if id(p) in reached)
    return TrainParts(
        synced_outside_ddp=outside,
        optimizers={"model": weights, "arch": arch, "gates": gates},
        extra_terms={"distill": TeacherDistill.from_config(teacher, s), **reg_terms},
        term_weights={"distill": s.distill_weight, **reg_weights},
        hooks=[TemperatureHook(student, s.tau_start, s.tau_end)],
    )


def feasible_range(ctx: PipelineContext, fetched: FetchedPredictor) -> dict:
    """The smallest and largest derivable network (``feasible``): predicted, and measured with the
    predictor's statistic when the run measures. ``{"predicted": [lo, hi], "measured": [lo, hi] | None}``."""

    r = derivable_range(ctx.build_supernet, fetched.model, ctx.latency_size, fetched.correction)
    out: dict = {"predicted": [r["smallest_ms"], r["largest_ms"]], "measured": None}
    if ctx.settings.measure:
        statistic = predictor_statistic(fetched.meta)
        try:
            measured = [measure_network(ctx, derive(r[k]).eval(), f"{ctx.settings.name}-{k}", ctx.settings.derive_repeats,
                                        statistic)["ms"] for k in ("smallest", "largest")]
            out["measured"] = measured
        except RemoteError as exc:
            ctx.say(f"[search] warning: the derivable range could not be measured ({exc}); using the predicted one")
    return out


def resolve_target(ctx: PipelineContext, supernet_ms: float, feasible: dict) -> float:
    """The target in ms (the statistic the predictor learned), checked against the derivable range:
    ``target_ms`` as given, else ``target_position`` of the way from the smallest to the largest
    derivable network (measured where measured), else ``target_fraction`` of the supernet's prediction."""
    s = ctx.settings
    basis, what = (feasible["measured"], "measured") if feasible["measured"] else (feasible["predicted"], "predicted")
    target = s.target_ms or ctx.cfg.search.target_ms
    if not target and s.target_position is not None:
        target = basis[0] + s.target_position * (basis[1] - basis[0])
    target = target or s.target_fraction * supernet_ms
    check_target(target, basis[0], basis[1], what)
    return target


def predicted_aim(target: float, feasible: dict) -> float:
    """The predicted latency that should measure ``target``: linear between the two measured extremes
    (what a sum of block predictions misses grows with the network), the target itself if unmeasured."""
    if not feasible["measured"]:
        return target
    (p_lo, p_hi), (m_lo, m_hi) = feasible["predicted"], feasible["measured"]
    if m_hi <= m_lo:
        return target
    return p_lo + (target - m_lo) * (p_hi - p_lo) / (m_hi - m_lo)


def run_search(ctx: PipelineContext) -> dict:
    seed_everything(ctx.cfg.train.seed + 1, ctx.cfg.train.deterministic)
    await_campaign_predictor(ctx)
    fetched = ctx.predictor()
    teacher = ctx.pretrained_supernet()
    supernet_ms = predicted_ms(teacher, fetched.model, ctx.latency_size, fetched.correction)  # full mode: both paths
    if not math.isfinite(supernet_ms) or supernet_ms <= 0:
        raise ValueError(f"predictor v{fetched.version} for {ctx.device_class} predicts {supernet_ms} ms for the "
                         "supernet: refit it (POST /v1/predictors) on more measurements of this space")
    feasible = feasible_range(ctx, fetched)
    lo, hi = feasible["measured"] or feasible["predicted"]
    ctx.say(f"[search] derivable networks: {feasible['predicted'][0]:.2f}-{feasible['predicted'][1]:.2f} ms predicted"
            + (f", {lo:.2f}-{hi:.2f} ms measured" if feasible["measured"] else ""))
    target = resolve_target(ctx, supernet_ms, feasible)
    aim = predicted_aim(target, feasible)
    ctx.say(f"[search] target {target:.2f} ms, predicted aim {aim:.2f} ms (supernet predicted {supernet_ms:.2f} ms on "
            f"{ctx.device_class}, predictor v{fetched.version})")
    student = search_student(ctx, load_weights(ctx.state.result("pretrain")["model"]))
    on_device = copy.deepcopy(fetched.model).to(ctx.device)  # the regularizer runs beside the student
    latency = LatencyTerm(student, on_device, aim, ctx.latency_size, ctx.cfg.search.reg_mode, fetched.correction)
    gmacs_target = ctx.settings.target_gmacs
    gmacs_size = (ctx.settings.gmacs_height, ctx.settings.gmacs_width)
    reg = GmacsTerm(student, gmacs_target, gmacs_size, ctx.cfg.search.reg_mode) if gmacs_target else latency
    if gmacs_target:
        ctx.say(f"[search] GMACs target {gmacs_target:.2f} at {gmacs_size[0]}x{gmacs_size[1]} (regularizes the search)")
    calls_before = ctx.require_client().calls
    tic = time.perf_counter()
    result = train_phase(ctx, "search", student, search_parts(ctx, student, teacher, reg))
    elapsed = time.perf_counter() - tic
    choice = student.eval().active_config()
    return {
        **result,
        "target_ms": target,
        "aim_ms": aim,
        "feasible": feasible,
        "supernet_predicted_ms": supernet_ms,
        "expected_ms": latency.last_ms,
        "target_gmacs": gmacs_target,
        "gmacs_size": list(gmacs_size),
        "expected_gmacs": reg.last_gmacs if isinstance(reg, GmacsTerm) else None,
        "paths": choice["paths"],
        "widths": choice["widths"],
        "predictor": {"id": fetched.id, "version": fetched.version, "offline": fetched.offline},
        "network_correction": fetched.correction.model_dump(),
        "http_calls_during_search": ctx.require_client().calls - calls_before,
        "latency_seconds": latency.seconds,
        "latency_share": latency.seconds / elapsed if elapsed else None,
    }
