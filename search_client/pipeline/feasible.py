"""Feasible targets: the smallest and the largest network a supernet can derive.

A search can only choose one path per mixed block (skip, LIR or MHSA) and prune gated channels down
to each gate's floor, so every derived network lies between two extremes: the smallest (the cheapest
path of each block, every gate at its floor) and the largest (the dearest path, every gate full).
Only the architecture decides latency, so they are built untrained. A target outside their range
cannot be met, and the run stops before training with a one-line error naming the range.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from search_client.models.channel_gate import gates_of
from search_client.models.mixed_block import PATHS
from search_client.search.latency import predicted_ms
from shared.network_correction import PLAIN_SUM, NetworkCorrection
from shared.predictor import LatencyMLP


class InfeasibleTarget(ValueError):
    """The target lies outside what the supernet can derive; the message names the range."""


def extreme(build: Callable[[], nn.Module], predictor: LatencyMLP, size: tuple[int, int], largest: bool,
            correction: NetworkCorrection = PLAIN_SUM) -> nn.Module:
    """The supernet set to its smallest or largest derivable network by the predictor (through its
    network-level ``correction``): gates at their floor (or full), then block by block the path
    that predicts cheapest (or dearest)."""
    supernet = build()
    if not gates_of(supernet):
        supernet.install_gates()
    blocks = supernet.mixed_blocks()
    paths = ["lir"] * len(blocks)
    widths = {name: (g.channels if largest else g.floor) for name, g in supernet._named_gates().items()}
    supernet.set_active({"paths": paths, "widths": widths})
    for i in range(len(blocks)):
        scores = {}
        for path in PATHS:
            trial = paths[:i] + [path] + paths[i + 1:]
            try:
                supernet.set_active(trial)
                scores[path] = predicted_ms(supernet, predictor, size, correction)
            except ValueError:  # a path this block cannot take
                continue
        paths[i] = (max if largest else min)(scores, key=scores.get)
    supernet.set_active(paths)
    return supernet.eval()


def derivable_range(build: Callable[[], nn.Module], predictor: LatencyMLP, size: tuple[int, int],
                    correction: NetworkCorrection = PLAIN_SUM) -> dict:
    """``{"smallest": module, "largest": module, "smallest_ms", "largest_ms"}`` (predicted, corrected
    by the network-level ``correction``)."""
    small = extreme(build, predictor, size, False, correction)
    large = extreme(build, predictor, size, True, correction)
    return {"smallest": small, "largest": large, "smallest_ms": predicted_ms(small, predictor, size, correction),
            "largest_ms": predicted_ms(large, predictor, size, correction)}


def check_target(target_ms: float, low_ms: float, high_ms: float, what: str) -> None:
    """Raise InfeasibleTarget when ``target_ms`` lies outside [low_ms, high_ms]."""
    if not low_ms <= target_ms <= high_ms:
        raise InfeasibleTarget(f"target {target_ms:.2f} ms is outside what this supernet can derive: "
                               f"{low_ms:.2f}-{high_ms:.2f} ms ({what}); pick a target in that range")
