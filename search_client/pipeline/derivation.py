"""The derive phase: the compact network of the searched supernet, held to the latency target.

The search's gates usually land near the target; where a short search has not, the derivation moves
the channels nearest the gate threshold (lowest gate value first when too slow, highest pruned first
when too fast) until the predicted latency is within the tolerance. It does so by setting those gate
weights just across the threshold, so the derived network still equals the gated supernet exactly.
"""

from __future__ import annotations

import json
import logging

import torch
from torch import nn

from search_client.count import inference_params
from search_client.pipeline.context import PipelineContext
from search_client.search.derive import derive, subnet_spec
from search_client.search.gates import THRESHOLD, ChannelGate, gates_of
from search_client.search.latency import network_blocks, predict_blocks
from shared.costs import block_macs
from shared.predictor import LatencyMLP

log = logging.getLogger(__name__)
STEP_FRACTION = 0.03  # share of the movable channels flipped per round
MAX_ROUNDS = 300


def predicted_ms(model: nn.Module, predictor: LatencyMLP, size: tuple[int, int]) -> float:
    return float(predict_blocks(predictor, network_blocks(model, *size)).sum())


def gmacs(model: nn.Module, size: tuple[int, int]) -> float:
    """Analytic GMACs of the whole inference graph (sum over its profiled blocks)."""
    return sum(block_macs(b) for b in network_blocks(model, *size)) / 1e9


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


def fit_to_target(model: nn.Module, predictor: LatencyMLP, target: float, size: tuple[int, int], tol: float) -> dict:
    """Flip gates across the threshold until the predicted latency is within ``tol`` of ``target``."""
    gates = gates_of(model)
    before = ms = predicted_ms(model, predictor, size)
    rounds = 0
    for rounds in range(MAX_ROUNDS):  # noqa: B007 (rounds is reported)
        prune = ms > target * (1 + tol)
        if not prune and ms >= target * (1 - tol):
            break
        movable = _movable(gates, prune)
        if not movable or _flip(movable, prune) == 0:
            break
        ms = predicted_ms(model, predictor, size)
    return {"before_ms": before, "after_ms": ms, "rounds": rounds, "within": abs(ms / target - 1) <= tol}


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, size: tuple[int, int], seed: int = 0) -> float:
    """Largest absolute logit difference of two eval-mode networks on one random input."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def run_derive(ctx: PipelineContext) -> dict:
    fetched = ctx.predictor()
    supernet = ctx.searched_supernet()
    target = ctx.state.result("search")["target_ms"]
    size = ctx.latency_size
    fit = fit_to_target(supernet, fetched.model, target, size, ctx.settings.target_tolerance)
    if abs(fit["after_ms"] - fit["before_ms"]) > 1e-9:
        ctx.say(f"[derive] searched network predicted {fit['before_ms']:.2f} ms vs target {target:.2f} ms: "
                f"moved gates across the threshold -> {fit['after_ms']:.2f} ms")
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
        "target_ms": target,
        "fit": fit,
        "predicted_ms_local": predicted_ms(compact, fetched.model, size),
        "gmacs": gmacs(compact, size),
        "params_m": inference_params(compact) / 1e6,
        "equivalence_max_abs_diff": max_output_difference(supernet, compact, size),
    }
