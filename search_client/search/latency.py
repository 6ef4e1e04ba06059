"""Whole-network block lists and the differentiable latency regularizer.

:func:`network_blocks` lists every part of a dual-branch network's inference graph as profiled
block configs (detail convs, stem, down blocks, the running mixed-block paths, context, BGA, head),
with the widths the network really has (kept channels where gates are installed). Summing their
analytic MACs gives the network's MACs; predicting each gives its latency.

:func:`expected_latency` walks the same structure with *soft* values: each layer's width is its
gate's differentiable channel count (its input width the previous layer's), a stage stream's width
is mixed by the probability that no attention block runs in it, and each mixed block contributes
``p_lir * lat(lir) + p_mhsa * lat(mhsa)`` (skip costs nothing). All blocks go through the predictor
in one batched forward, so gradients reach gate weights and architecture logits.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from search_client.models.bisenetv2 import BiSeNetV2
from search_client.models.channel_gate import ChannelGate
from search_client.models.mixed_block import MixedBlock
from search_client.models.twobranch import TwoBranchNet
from shared.blocks import LIRBlock, MHSABlock
from shared.config import (
    AnyBlock,
    BGAConfig,
    ContextConfig,
    ConvConfig,
    DownConfig,
    HeadConfig,
    LIRConfig,
    MHSAConfig,
    StemConfig,
)
from shared.costs import block_fields, block_macs, ceil_div, macs_of
from shared.encoding import N_FEATURES, encode_blocks, encode_values
from shared.network_correction import PLAIN_SUM, NetworkCorrection
from shared.predictor import LatencyMLP

Width = int | torch.Tensor
RegMode = Literal["one-sided", "two-sided"]


@dataclass
class _Part:
    """One block of the walk: its full-width config, channel overrides and a path weight."""

    cfg: AnyBlock
    widths: dict[str, Width]
    weight: torch.Tensor | float = 1.0


class _Widths:
    """How a walk reads widths: hard (kept counts, chosen paths) or soft (gate sums, path probs)."""

    def __init__(self, soft: bool):
        self.soft = soft
        self.streams: dict[int, Width] = {}  # id(stream gate) -> the stream's width (see _stream_width)

    def of(self, gate: nn.Module, full: int) -> Width:
        if not isinstance(gate, ChannelGate):
            return full
        if id(gate) in self.streams:
            return self.streams[id(gate)]
        return gate.soft_count() if self.soft else gate.kept_count()


def _conv_out(module: nn.Module) -> int:
    return module.conv[0].out_channels


def _walk(model: nn.Module, height: int, width: int, soft: bool) -> Iterator[_Part]:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if isinstance(model, BiSeNetV2) or not isinstance(model, TwoBranchNet):
        raise TypeError(
            f"{type(model).__name__} is not a dual-branch RTSeg network; its layers (e.g. BiSeNetV2's "
            "grouped gather-and-expand convs) have no profiled block kind"
        )
    ws = _Widths(soft)
    for stage in model.stages:
        gate = stage.stream_gate()
        if gate is not None:
            ws.streams[id(gate)] = _stream_width(stage, gate, ws)
    divisor = model.size_divisor()  # the network pads its input to this multiple
    height, width = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    yield from _walk_detail(model, height, width, ws)
    h, w = ceil_div(ceil_div(height, 2), 2), ceil_div(ceil_div(width, 2), 2)
    yield _stem_part(model.stem, height, width, ws)
    cin: Width = ws.of(model.stem.gate_out, model.stem.fuse[0].out_channels)
    for stage in model.stages:
        cin = yield from _walk_stage(stage, h, w, cin, ws)
        h, w = ceil_div(h, 2), ceil_div(w, 2)
    c = model.context.last[0].out_channels  # the joint width of the last stage, context and BGA
    yield _Part(ContextConfig(h=h, w=w, cin=c), {"cin": cin})
    yield _Part(BGAConfig(h=4 * h, w=4 * w, cin=c), {"cin": cin})
    head = model.head
    yield _Part(
        HeadConfig(
            h=4 * h, w=4 * w, cin=c, cmid=head.conv[0].out_channels, classes=head.cls.out_channels, scale=8
        ),
        {"cin": cin, "cmid": ws.of(head.gate_mid, head.conv[0].out_channels)},
    )


def _stem_part(stem: nn.Module, h: int, w: int, ws: _Widths) -> _Part:
    mid, lead, out = stem.conv[0].out_channels, stem.left[0][0].out_channels, stem.fuse[0].out_channels
    cfg = StemConfig(h=h, w=w, cin=3, cout=out, cmid=mid, clead=lead)
    widths = {"cmid": ws.of(stem.gate_mid, mid), "clead": ws.of(stem.gate_lead, lead), "cout": ws.of(stem.gate_out, out)}
    return _Part(cfg, widths)


def _walk_detail(model: TwoBranchNet, h: int, w: int, ws: _Widths) -> Iterator[_Part]:
    cin: Width = 3
    for conv in model.detail:
        k, s = conv.conv[0].kernel_size[0], conv.conv[0].stride[0]
        cout = ws.of(conv.gate_out, _conv_out(conv))
        yield _Part(ConvConfig(h=h, w=w, cin=conv.conv[0].in_channels, cout=_conv_out(conv), kernel=k, stride=s),
                    {"cin": cin, "cout": cout})  # fmt: skip
        h, w, cin = ceil_div(h, s), ceil_div(w, s), cout


def _no_mhsa_prob(stage: nn.Module, ws: _Widths) -> torch.Tensor | float:
    """Probability (soft) or indicator (hard) that no block of the stage runs attention."""
    p: torch.Tensor | float = 1.0
    for b in stage.blocks:
        if isinstance(b, MixedBlock):
            p = (
                p * (1 - b.path_probs()[2])
                if ws.soft and b.mode == "gumbel"
                else p * float(not _runs_mhsa(b))
            )
        elif isinstance(b, MHSABlock):
            p = 0.0
    return p


def _runs_mhsa(b: MixedBlock) -> bool:
    """Hard walks describe the eval-mode network: the argmax / fixed path, or both in ``full``."""
    return b.chosen() in ("mhsa", "full")


def _stream_width(stage: nn.Module, gate: ChannelGate, ws: _Widths) -> Width:
    """A stage stream's width: its gate's count, or full while a block of the stage runs attention
    (soft: mixed by the probability that none does)."""
    full_out = stage.down.project[0].out_channels
    p_free = _no_mhsa_prob(stage, ws)
    if ws.soft:
        return p_free * gate.soft_count() + (1 - p_free) * full_out
    return gate.kept_count() if p_free else full_out


def _walk_stage(stage: nn.Module, h: int, w: int, cin: Width, ws: _Widths) -> Generator[_Part, None, Width]:
    down = stage.down
    full_out = down.project[0].out_channels
    stream = ws.of(down.gate_out, full_out)
    cmid, clead = down.expand[0].out_channels, down.lead[0].out_channels
    yield _Part(DownConfig(h=h, w=w, cin=down.lead[0].in_channels, clead=clead, cmid=cmid, cout=full_out),
                {"cin": cin, "clead": ws.of(down.gate_lead, clead), "cmid": ws.of(down.gate_mid, cmid),
                 "cout": stream})  # fmt: skip
    h2, w2 = ceil_div(h, 2), ceil_div(w, 2)
    for b in stage.blocks:
        yield from _walk_block(b, h2, w2, stream, ws)
    return stream


def _lir_part(b: LIRBlock, h: int, w: int, c: Width, ws: _Widths, weight: torch.Tensor | float) -> _Part:
    cmid, full, clead = b.expand[0].out_channels, b.lead[0].in_channels, b.lead[0].out_channels
    cfg = LIRConfig(h=h, w=w, cin=full, clead=clead, cmid=cmid, cout=full, kernel=b.dw[0].kernel_size[0], stride=1)
    widths = {"cin": c, "clead": ws.of(b.gate_lead, clead), "cmid": ws.of(b.gate_mid, cmid), "cout": c}
    return _Part(cfg, widths, weight)


def _mhsa_part(b: MHSABlock, h: int, w: int, c: Width, ws: _Widths, weight: torch.Tensor | float) -> _Part:
    full = b.norm1.normalized_shape[0] // (b.patch * b.patch)
    cmid = b.fc1.out_features
    cfg = MHSAConfig(h=h, w=w, cin=full, heads=b.heads, patch=b.patch, cmid=cmid)
    return _Part(cfg, {"cmid": ws.of(b.gate_mid, cmid)}, weight)


def _walk_block(b: nn.Module, h: int, w: int, c: Width, ws: _Widths) -> Iterator[_Part]:
    if isinstance(b, LIRBlock):
        yield _lir_part(b, h, w, c, ws, 1.0)
    elif isinstance(b, MHSABlock):
        yield _mhsa_part(b, h, w, c, ws, 1.0)
    elif ws.soft and b.mode == "gumbel":
        probs = b.path_probs()
        yield _lir_part(b.lir, h, w, c, ws, probs[1])
        yield _mhsa_part(b.mhsa, h, w, c, ws, probs[2])
    else:
        path = b.chosen()
        if path in ("lir", "full"):
            yield _lir_part(b.lir, h, w, c, ws, 1.0)
        if path in ("mhsa", "full"):
            yield _mhsa_part(b.mhsa, h, w, c, ws, 1.0)


def network_blocks(model: nn.Module, height: int, width: int) -> list[AnyBlock]:
    """Every part of the inference graph as block configs with the widths that really run.

    For a supernet: kept channels where gates are installed and the paths each mixed block would
    run in eval mode (``full`` lists both LIR and MHSA).
    """
    out = []
    for part in _walk(model, height, width, soft=False):
        values = {k: int(v) for k, v in part.widths.items()}
        out.append(part.cfg.model_copy(update=values) if values else part.cfg)
    return out


def _batched_features(kind: str, rows: list[dict[str, Width]], device: torch.device) -> torch.Tensor:
    """(n, N_FEATURES) features of same-kind blocks in one vectorized encode."""
    values = {k: _stack([r[k] for r in rows], device) for k in rows[0]}
    feats = encode_values(kind, values)
    n = len(rows)
    cols = [
        f.float() if isinstance(f, torch.Tensor) else torch.full((n,), float(f), device=device) for f in feats
    ]
    return torch.stack([col.expand(n) for col in cols], dim=1)


def _stack(items: list[Width | float], device: torch.device) -> torch.Tensor:
    return torch.stack(
        [
            i.to(device) if isinstance(i, torch.Tensor) else torch.tensor(float(i), device=device)
            for i in items
        ]
    ).float()


def soft_features(model: nn.Module, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, N_FEATURES) soft features of the whole network and (N,) path weights (model's device)."""
    device = next(model.parameters()).device
    by_kind: dict[str, list[tuple[int, dict[str, Width]]]] = {}
    weights: list[torch.Tensor | float] = []
    for i, part in enumerate(_walk(model, height, width, soft=True)):
        values: dict[str, Width] = {**block_fields(part.cfg), **part.widths}
        by_kind.setdefault(part.cfg.kind, []).append((i, values))
        weights.append(part.weight)
    feats = torch.zeros(len(weights), N_FEATURES, device=device)
    for kind, rows in by_kind.items():
        index = torch.tensor([i for i, _ in rows], device=device)
        feats = feats.index_copy(0, index, _batched_features(kind, [v for _, v in rows], device))
    return feats, _stack(weights, device)


def expected_latency(
    model: nn.Module, predictor: LatencyMLP, height: int, width: int, correction: NetworkCorrection = PLAIN_SUM
) -> torch.Tensor:
    """Differentiable expected latency (ms) of the whole network under the current gates/logits.

    With a network-level ``correction``, the expected block sum goes through it: the value is the
    corrected total of that sum with the features that do not scale with it (block count, boundary
    tensors, weights) read from the network as it would derive now (hard gates and paths). Those
    are held constant, so the gradient is the block sum's gradient times the correction's scale
    (its coefficient on the sum, > 0): the corrected total is what the target is compared with,
    while the gates and path logits are pushed the way the block predictions say."""
    feats, weights = soft_features(model, height, width)
    device = next(predictor.parameters()).device
    ms = predictor(feats.to(device))  # (N,)
    total = (ms * weights.to(device)).sum()
    if correction.is_plain_sum:
        return total
    return correction.scale * total + correction.offset(network_blocks(model, height, width))


def expected_gmacs(model: nn.Module, height: int, width: int) -> torch.Tensor:
    """Differentiable expected GMACs of the whole network under the current gates/logits (the soft
    walk of :func:`expected_latency` through ``shared.costs`` instead of the predictor): the other
    regularizer of the paper's Eq. 8, on computation instead of latency. With hard gates and fixed
    paths its value is the analytic MACs of the network the supernet derives."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for part in _walk(model, height, width, soft=True):
        values: dict[str, Width] = {**block_fields(part.cfg), **part.widths}
        total = total + part.weight * macs_of(part.cfg.kind, values)
    return total / 1e9


def latency_loss(expected_ms: torch.Tensor, target_ms: float, mode: RegMode = "one-sided") -> torch.Tensor:
    """Relative distance to the target: one-sided penalizes only exceeding it."""
    rel = expected_ms / target_ms - 1.0
    if mode == "one-sided":
        return F.relu(rel)
    if mode == "two-sided":
        return rel.abs()
    raise ValueError(f"unknown latency loss mode {mode!r}; use 'one-sided' or 'two-sided'")


def predict_blocks(predictor: LatencyMLP, blocks: list[AnyBlock]) -> torch.Tensor:
    """(N,) predicted ms of plain block configs (one batched forward)."""
    with torch.no_grad():
        return predictor(encode_blocks(blocks))


def predicted_ms(
    model: nn.Module, predictor: LatencyMLP, size: tuple[int, int], correction: NetworkCorrection = PLAIN_SUM
) -> float:
    """Predicted latency (ms) of a network as it is now (fixed paths and gates; a supernet in its
    full mode counts both paths of every mixed block): the sum over its profiled blocks, through
    the predictor's network-level ``correction`` when one is fitted."""
    blocks = network_blocks(model, *size)
    return correction.apply(float(predict_blocks(predictor, blocks).sum()), blocks)


def gmacs(model: nn.Module, size: tuple[int, int]) -> float:
    """Analytic GMACs of a network's whole inference graph (sum over its profiled blocks)."""
    return sum(block_macs(b) for b in network_blocks(model, *size)) / 1e9
