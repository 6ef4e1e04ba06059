"""The derive phase: the compact network of the searched supernet, held to the latency target.

The search's gates usually land near the target; where a short search has not, the derivation moves
the channels nearest the gate threshold (lowest gate value first when too slow, highest pruned first
when too fast) until the predicted latency is within the tolerance. It does so by setting those gate
weights just across the threshold, so the derived network still equals the gated supernet exactly.

A sum of block predictions misses a whole network by what no block sees (graph-level fusion, memory
traffic between blocks, per-op overheads). Every prediction here is the predictor's network-level
corrected total (fitted by the farm on the networks it measured; the plain sum when too few were).
What it still misses is measured: when the run measures, each derived candidate is
exported and measured on the target device (``derive_repeats`` jobs, the statistic the predictor
learned, see ``measuring``), and while the measurement misses the target the next predicted aim is
set from every (predicted, measured) pair of the run: interpolated between the two nearest
candidates that bracket the target, else the measured/predicted ratio of the nearest one. The run
keeps the candidate measured nearest the target, never a later one that landed farther.
The candidates are measured with their untrained derived weights; trained weights can measure
differently (subnormal values slow a CPU down), so the measure phase compares the trained network with
the untrained candidate of the same architecture and reports the trained-weights ratio when they
differ (``finish.trained_weights_check``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from search_client.count import inference_params
from search_client.models.channel_gate import THRESHOLD, ChannelGate, gates_of
from search_client.pipeline.context import PipelineContext
from search_client.pipeline.measuring import measure_network, predictor_statistic
from search_client.remote import RemoteError
from search_client.search.derive import derive, subnet_spec
from search_client.search.latency import gmacs, predicted_ms
from shared.network_correction import PLAIN_SUM, NetworkCorrection
from shared.predictor import LatencyMLP

log = logging.getLogger(__name__)
STEP_FRACTION = 0.03  # share of the movable channels flipped per round
MAX_ROUNDS = 300


def _movable(gates: list[ChannelGate], prune: bool) -> list[tuple[float, ChannelGate, int]]:
    """(gate value, gate, channel) that may flip: kept ones above a gate's floor, or pruned ones."""
    out = []
    for g in gates:
        kept = g.kept()
        if prune and int(kept.sum()) <= g.floor:
            continue
        for i in torch.nonzero(kept if prune else ~kept).flatten().tolist():
            out.append((float(g.weight[i].detach()), g, i))
    return sorted(out, key=lambda t: t[0], reverse=not prune)


@torch.no_grad()
def _flip(movable: list[tuple[float, ChannelGate, int]], prune: bool) -> int:
    count = max(1, int(STEP_FRACTION * len(movable)))
    budget: dict[int, int] = {}
    flipped = 0
    for _, g, i in movable[:count]:
        room = g.kept_count() - g.floor - budget.get(id(g), 0)
        if prune and room <= 0:
            continue
        g.weight[i] = THRESHOLD - 0.01 if prune else THRESHOLD + 0.01
        budget[id(g)] = budget.get(id(g), 0) + 1
        flipped += 1
    return flipped


def fit_to_target(
    model: nn.Module, predictor: LatencyMLP, target: float, size: tuple[int, int], tol: float,
    cost: Callable[[nn.Module], float] | None = None, correction: NetworkCorrection = PLAIN_SUM,
) -> dict:
    """Flip gates across the threshold until the predicted latency (the network-level corrected
    total; or ``cost(model)``, e.g. GMACs) is within ``tol`` of ``target``. The result's ``*_ms``
    keys hold that cost."""
    gates = gates_of(model)
    cost = cost or (lambda m: predicted_ms(m, predictor, size, correction))
    before = ms = cost(model)
    rounds = 0
    for rounds in range(MAX_ROUNDS):  # noqa: B007 (rounds is reported)
        prune = ms > target * (1 + tol)
        if not prune and ms >= target * (1 - tol):
            break
        movable = _movable(gates, prune)
        if not movable or _flip(movable, prune) == 0:
            break
        ms = cost(model)
    return {"before_ms": before, "after_ms": ms, "rounds": rounds, "within": abs(ms / target - 1) <= tol}


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, size: tuple[int, int], seed: int = 0) -> float:
    """Largest absolute logit difference of two eval-mode networks on one random input."""
    device = next(a.parameters()).device
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(device)
    return float((a.eval()(x) - b.to(device).eval()(x)).abs().max())


def next_aim(pairs: Sequence[dict], target: float) -> float:
    """The predicted latency to aim the gates at next, from every (predicted, measured) pair so far:
    linear between the nearest pair below and the nearest above the target when they bracket it
    (and are ordered alike in prediction), else the target scaled by predicted/measured of the
    candidate measured nearest the target."""
    below = [r for r in pairs if r["measured_ms"] <= target]
    above = [r for r in pairs if r["measured_ms"] > target]
    if below and above:
        lo = max(below, key=lambda r: r["measured_ms"])
        hi = min(above, key=lambda r: r["measured_ms"])
        if hi["predicted_ms"] > lo["predicted_ms"]:
            t = (target - lo["measured_ms"]) / (hi["measured_ms"] - lo["measured_ms"])
            return lo["predicted_ms"] + t * (hi["predicted_ms"] - lo["predicted_ms"])
    nearest = min(pairs, key=lambda r: abs(r["measured_ms"] / target - 1))
    return target * nearest["predicted_ms"] / nearest["measured_ms"]


def _gate_state(supernet: nn.Module) -> list[torch.Tensor]:
    return [g.weight.detach().clone() for g in gates_of(supernet)]


@torch.no_grad()
def _restore_gates(supernet: nn.Module, state: list[torch.Tensor]) -> None:
    for g, w in zip(gates_of(supernet), state, strict=True):
        g.weight.copy_(w)


# The final network is measured again with fresh jobs, which on a shared host land a few percent
# either side of its candidate's figure: a candidate at the edge of the tolerance would end outside
# it about half the time, so the calibration goes on until one lands within this share of it.
STOP_WITHIN_SHARE = 0.5


def on_target(measured: float, target: float, tolerance: float) -> bool:
    """True when a measured candidate ends the calibration: within half the run's tolerance."""
    return abs(measured / target - 1) <= tolerance * STOP_WITHIN_SHARE


def calibrate(ctx: PipelineContext, supernet: nn.Module, predictor: LatencyMLP, target: float,
              statistic: str, anchors: Sequence[dict] = (), correction: NetworkCorrection = PLAIN_SUM) -> list[dict]:
    """Measure derived candidates until one lands within half the tolerance of ``target`` (or the
    rounds run out); leave ``supernet``'s gates at the candidate measured nearest the target. One row per
    candidate; the kept one has ``"chosen": True``. ``anchors``: (predicted, measured) pairs of other
    networks of this supernet measured in this run (the derivable extremes), used for aiming only.
    Predictions are the predictor's network-level corrected totals (``correction``)."""
    size, tol, s = ctx.latency_size, ctx.settings.target_tolerance, ctx.settings
    rows: list[dict] = []
    states: list[list[torch.Tensor]] = []
    for i in range(s.calibrate_rounds):
        compact = derive(supernet).eval()
        predicted = predicted_ms(compact, predictor, size, correction)
        if any(abs(r["predicted_ms"] - predicted) < 1e-9 for r in rows):
            ctx.say(f"[derive] the re-aimed gates gave a candidate measured already ({predicted:.2f} ms predicted)")
            break
        try:
            m = measure_network(ctx, compact, f"{s.name}-derive-{i}", s.derive_repeats, statistic)
        except RemoteError as exc:  # an unreachable farm must not stop an overnight run here
            ctx.say(f"[derive] warning: calibration skipped, the derived network could not be measured: {exc}")
            break
        measured = m["ms"]
        rows.append({"predicted_ms": predicted, "measured_ms": measured, "median_ms": m["median_ms"],
                     "repeats_ms": m["repeats_ms"], "statistic": statistic, "ratio": measured / predicted,
                     "measured_vs_target": measured / target - 1, "gmacs": gmacs(compact, size)})
        states.append(_gate_state(supernet))
        ctx.say(f"[derive] candidate {i + 1}: measured {measured:.2f} ms ({statistic} over {s.derive_repeats} jobs: "
                f"{', '.join(f'{v:.2f}' for v in m['repeats_ms'])}; median {m['median_ms']:.2f}), "
                f"predicted {predicted:.2f} ms, target {target:.2f} ms")
        if on_target(measured, target, tol) or i + 1 == s.calibrate_rounds:
            break
        aim = next_aim([*anchors, *rows], target)
        fit = fit_to_target(supernet, predictor, aim, size, tol / 3, correction=correction)
        ctx.say(f"[derive] next predicted aim {aim:.2f} ms (from {len(rows)} measured candidates) -> "
                f"{fit['after_ms']:.2f} ms predicted")
    if rows:
        best = min(range(len(rows)), key=lambda j: abs(rows[j]["measured_vs_target"]))
        rows[best]["chosen"] = True
        _restore_gates(supernet, states[best])
        if best != len(rows) - 1:
            ctx.say(f"[derive] keeping candidate {best + 1} ({rows[best]['measured_ms']:.2f} ms measured), the "
                    "nearest to the target")
    return rows


def fit_gmacs(ctx: PipelineContext, supernet: nn.Module, predictor: LatencyMLP, search: dict) -> dict:
    """Hold the analytic GMACs of the derived network within the tolerance of the GMACs target."""
    target, size = search["target_gmacs"], tuple(search["gmacs_size"])
    fit = fit_to_target(supernet, predictor, target, size, ctx.settings.target_tolerance,
                        cost=lambda m: gmacs(m, size))  # fmt: skip
    ctx.say(f"[derive] searched network {fit['before_ms']:.2f} GMACs vs target {target:.2f} GMACs at "
            f"{size[0]}x{size[1]} -> {fit['after_ms']:.2f} GMACs")
    return {"before_gmacs": fit["before_ms"], "after_gmacs": fit["after_ms"], "rounds": fit["rounds"],
            "within": fit["within"], "target_gmacs": target}


def run_derive(ctx: PipelineContext) -> dict:
    fetched = ctx.predictor()
    supernet = ctx.searched_supernet()
    search = ctx.state.result("search")
    target = search["target_ms"]  # in measured ms (the predictor's statistic)
    size = ctx.latency_size
    statistic = predictor_statistic(fetched.meta)
    if search.get("target_gmacs"):
        fit = fit_gmacs(ctx, supernet, fetched.model, search)
        calibration: list[dict] = []  # the GMACs target holds; no latency re-aiming
    else:
        aim = search.get("aim_ms", target)
        fit = fit_to_target(supernet, fetched.model, aim, size, ctx.settings.target_tolerance / 3,
                            correction=fetched.correction)
        if abs(fit["after_ms"] - fit["before_ms"]) > 1e-9:
            ctx.say(f"[derive] searched network predicted {fit['before_ms']:.2f} ms vs predicted aim {aim:.2f} ms: "
                    f"moved gates across the threshold -> {fit['after_ms']:.2f} ms")
        feasible = search.get("feasible") or {}
        anchors = ([{"predicted_ms": p, "measured_ms": m}
                    for p, m in zip(feasible["predicted"], feasible["measured"], strict=True)]
                   if feasible.get("measured") else [])
        calibration = (calibrate(ctx, supernet, fetched.model, target, statistic, anchors, fetched.correction)
                       if ctx.settings.measure else [])
    chosen = next((c for c in calibration if c.get("chosen")), None)
    compact = derive(supernet).eval()
    spec = subnet_spec(supernet)
    folder = ctx.state.phase_dir("derive")
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    torch.save({"arch": "subnet", "model_kwargs": {"spec": spec}, "state_dict": compact.state_dict()}, folder / "model.pt")
    choice = supernet.active_config()
    return {
        "model": str(folder / "model.pt"),
        "spec": spec,
        "paths": choice["paths"],
        "widths": choice["widths"],
        "channels": choice["channels"],
        "target_ms": target,
        "fit": fit,
        "calibration": calibration,
        "statistic": statistic,
        "untrained_measured_ms": chosen["measured_ms"] if chosen else None,
        "predicted_ms_local": predicted_ms(compact, fetched.model, size, fetched.correction),
        "block_sum_ms_local": predicted_ms(compact, fetched.model, size),
        "network_correction": fetched.correction.model_dump(),
        "gmacs": gmacs(compact, size),
        "params_m": inference_params(compact) / 1e6,
        "equivalence_max_abs_diff": max_output_difference(supernet, compact, size),
    }
