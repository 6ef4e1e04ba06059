"""Predicted-vs-measured scatter as inline SVG (log-log, the y = x line and a ±10 % band)."""

from __future__ import annotations

import math
from dataclasses import dataclass

SIZE, PAD = 320, 36


@dataclass(frozen=True)
class Scatter:
    points: list[tuple[float, float]]  # SVG coordinates
    diagonal: tuple[float, float, float, float]
    band: str  # polygon points of the ±10 % band
    ticks: list[tuple[float, str]]  # axis position, label (ms)
    n: int
    within_10: float


def scatter(measured: list[float], predicted: list[float]) -> Scatter:
    lo = math.log10(min(min(measured), min(predicted)) * 0.8)
    hi = math.log10(max(max(measured), max(predicted)) * 1.25)

    def pos(ms: float) -> float:
        return PAD + (math.log10(ms) - lo) / (hi - lo) * (SIZE - 2 * PAD)

    def point(x_ms: float, y_ms: float) -> tuple[float, float]:
        return round(pos(x_ms), 1), round(SIZE - pos(y_ms), 1)

    a, b = 10**lo, 10**hi
    band = [point(a, a * 1.1), point(b, b * 1.1), point(b, b * 0.9), point(a, a * 0.9)]
    steps = [m * 10**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [(round(pos(v), 1), f"{v:g}") for v in steps if lo <= math.log10(v) <= hi]
    within = sum(abs(p - m) <= 0.1 * m for m, p in zip(measured, predicted, strict=True)) / len(measured)
    return Scatter(
        points=[point(m, p) for m, p in zip(measured, predicted, strict=True)],
        diagonal=(*point(a, a), *point(b, b)),
        band=" ".join(f"{x},{y}" for x, y in band),
        ticks=ticks,
        n=len(measured),
        within_10=within,
    )
