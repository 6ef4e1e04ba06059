"""Network-level latency: what a sum of block predictions misses about a whole network.

A block is measured alone: its input comes from the caller and its output goes back to it, its
weights stay in cache across runs, and the runtime pays one inference call per block. A whole
network streams its tensors from block to block, reads all its weights once per run and pays one
call. The farm fits a small linear model per device class and runtime from networks it measured
together with their block lists (``profiler_server.predictor.network_fit``):

    measured ≈ Σ coef[f] · feature[f]

over a few aggregate features of the network (``FEATURES``). The server and the search client apply
the same model, so a corrected total means the same thing on both sides. A correction is plain
data (:class:`NetworkCorrection`): the model that won on held-out networks, its coefficients and
its held-out figures; ``model == "sum"`` is the plain sum (too few networks, or nothing beat it).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from shared.config import AnyBlock
from shared.costs import block_params

# Aggregate features of a network's block list; ``sum_ms`` is the sum of the block predictions.
FEATURES: tuple[str, ...] = ("sum_ms", "blocks", "boundary_melems", "params_m", "const")
# The models tried, as the features each one uses ("sum" is the plain sum, nothing fitted).
MODELS: dict[str, tuple[str, ...]] = {
    "sum": (),
    "scale": ("sum_ms",),
    "affine": ("sum_ms", "blocks", "const"),
    "traffic": ("sum_ms", "boundary_melems", "params_m", "const"),
}


class NetworkCorrection(BaseModel):
    """One fitted network-level correction of a predictor version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("sum", description="the model that won on held-out networks; 'sum': the plain sum")
    coef: dict[str, float] = Field(default_factory=dict, description="feature -> coefficient (FEATURES)")
    n_networks: int = Field(0, description="measured networks with block lists it was chosen on")
    n_unstable: int = Field(0, description="networks left out: every measurement of theirs was flagged unstable")
    revision: int = Field(0, description="counts refits of this predictor version's correction")
    fallback: str | None = Field(None, description="why the plain sum is served, when it is")
    heldout: dict = Field(default_factory=dict,
                          description="leave-one-out figures on the measured networks: per model MAPE and "
                                      "share within ±10 %")

    @property
    def is_plain_sum(self) -> bool:
        return self.model == "sum" or not self.coef

    @property
    def scale(self) -> float:
        """d(corrected)/d(sum of block predictions): what a gradient of the sum is multiplied by."""
        return 1.0 if self.is_plain_sum else float(self.coef.get("sum_ms", 0.0))

    def apply(self, sum_ms: float, blocks: Sequence[AnyBlock]) -> float:
        """The corrected whole-network latency of ``blocks`` whose predictions sum to ``sum_ms``."""
        if self.is_plain_sum:
            return float(sum_ms)
        return self.offset(blocks) + self.scale * float(sum_ms)

    def offset(self, blocks: Sequence[AnyBlock]) -> float:
        """The part of the corrected total that does not scale with the sum (fixed by the block list)."""
        if self.is_plain_sum:
            return 0.0
        values = aggregate_features(0.0, blocks)
        return sum(c * values[f] for f, c in self.coef.items() if f != "sum_ms")


PLAIN_SUM = NetworkCorrection(fallback="no correction fitted")


def aggregate_features(sum_ms: float, blocks: Sequence[AnyBlock]) -> dict[str, float]:
    """``FEATURES`` of one network: the summed predictions, the block count, the elements of every
    tensor passed between blocks (all outputs but the last, in millions) and the weights (millions)."""
    boundary = 0
    for cfg in blocks[:-1]:
        h, w = cfg.out_size()
        boundary += cfg.out_channels * h * w
    return {"sum_ms": float(sum_ms), "blocks": float(len(blocks)), "boundary_melems": boundary / 1e6,
            "params_m": sum(block_params(cfg) for cfg in blocks) / 1e6, "const": 1.0}
