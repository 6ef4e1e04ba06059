"""The derive phase: the compact network of the searched supernet, held to the latency target.

The search's gates usually land near the target; where a short search has not, the derivation moves
the channels nearest the gate threshold (lowest gate value first when too slow, highest pruned first
when too fast) until the predicted latency is within the tolerance. It does so by setting those gate
weights just across the threshold, so the derived network still equals the gated supernet exactly.

A sum of block predictions misses a whole network by what no block sees (graph-level fusion, memory
traffic between blocks, per-op overheads). So when the run measures, the derived network is exported
and measured on the target device, and while the measurement misses the target the predicted target
is re-aimed by measured/predicted of that network and the gates are fitted again (``calibrate_rounds``).
Only the architecture matters for latency, so the untrained derived weights measure like the final ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import torch
from torch import nn

from search_client.count import inference_params
from search_client.pipeline.context import PipelineContext
from search_client.remote import RemoteError
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


def fit_to_target(
    model: nn.Module, predictor: LatencyMLP, target: float, size: tuple[int, int], tol: float,
    cost: Callable[[nn.Module], float] | None = None,
) -> dict:
    """Flip gates across the threshold until the predicted latency (or ``cost(model)``, e.g. GMACs)
    is within ``tol`` of ``target``. The result's ``*_ms`` keys hold that cost."""
    gates = gates_of(model)
    cost = cost or (lambda m: predicted_ms(m, predictor, size))
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
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    return float((a.eval()(x) - b.eval()(x)).abs().max())


def measure_network(ctx: PipelineContext, model: nn.Module, name: str) -> float:
    """Median latency (ms) of ``model`` measured on the run's target device, batch 1."""
    from search_client.pipeline.finish import export_input, export_onnx

    client = ctx.require_client()
    onnx_bytes = export_onnx(model, export_input(ctx.latency_size))
    job = client.upload_network(onnx_bytes, ctx.device_class, ctx.settings.runtime, name)
    return float(client.wait_job(int(job["job_id"]))["median_ms"])


def calibrate(ctx: PipelineContext, supernet: nn.Module, predictor: LatencyMLP, target: float) -> list[dict]:
    """Measure the derived network; while it misses ``target`` by more than the tolerance, re-aim the
    predicted target by measured/predicted and fit the gates again. One row per measurement."""
    size, tol = ctx.latency_size, ctx.settings.target_tolerance
    rows: list[dict] = []
    for i in range(ctx.settings.calibrate_rounds):
        compact = derive(supernet).eval()
        predicted = predicted_ms(compact, predictor, size)
        try:
            measured = measure_network(ctx, compact, f"{ctx.settings.name}-derive-{i}")
        except RemoteError as exc:  # an unreachable farm must not stop an overnight run here
            ctx.say(f"[derive] warning: calibration skipped, the derived network could not be measured: {exc}")
            break
        ratio = measured / predicted
        rows.append({"predicted_ms": predicted, "measured_ms": measured, "ratio": ratio,
                     "measured_vs_target": measured / target - 1})
        ctx.say(f"[derive] calibration {i + 1}: measured {measured:.2f} ms, predicted {predicted:.2f} ms, "
                f"target {target:.2f} ms")
        if abs(measured / target - 1) <= tol or i + 1 == ctx.settings.calibrate_rounds:
            break
        aim = target / ratio
        fit = fit_to_target(supernet, predictor, aim, size, tol / 2)
        ctx.say(f"[derive] re-aimed the predicted target to {aim:.2f} ms -> {fit['after_ms']:.2f} ms predicted")
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
    target = search["target_ms"]
    size = ctx.latency_size
    if search.get("target_gmacs"):
        fit = fit_gmacs(ctx, supernet, fetched.model, search)
        calibration: list[dict] = []  # the GMACs target holds; no latency re-aiming
    else:
        fit = fit_to_target(supernet, fetched.model, target, size, ctx.settings.target_tolerance)
        if abs(fit["after_ms"] - fit["before_ms"]) > 1e-9:
            ctx.say(f"[derive] searched network predicted {fit['before_ms']:.2f} ms vs target {target:.2f} ms: "
                    f"moved gates across the threshold -> {fit['after_ms']:.2f} ms")
        calibration = calibrate(ctx, supernet, fetched.model, target) if ctx.settings.measure else []
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
        "predicted_ms_local": predicted_ms(compact, fetched.model, size),
        "gmacs": gmacs(compact, size),
        "params_m": inference_params(compact) / 1e6,
        "equivalence_max_abs_diff": max_output_difference(supernet, compact, size),
    }
