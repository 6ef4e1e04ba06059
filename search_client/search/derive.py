"""Derivation: the plain compact network a searched supernet stands for.

``subnet_spec(supernet)`` reads the chosen path of every mixed block (argmax under search, or the
fixed path) and the kept channels of every gate, and writes a JSON-able :class:`SubnetSpec`.
``derive(supernet)`` builds that network and copies the weights, physically sliced to the kept
channels (convs, BN statistics, linear layers). A gate follows every conv (depthwise ones too, whose
BN would turn a pruned zero channel into a constant), so a pruned channel is exactly zero wherever
it is read and the derived network computes what the gated supernet computes in eval mode.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from search_client.models.channel_gate import ChannelGate
from search_client.models.mixed_block import MixedBlock
from search_client.models.supernet import RTSegSupernet
from search_client.models.twobranch import (
    ConvSpec,
    DownSpec,
    LIRSpec,
    MHSASpec,
    Stage,
    StageSpec,
    SubnetSpec,
    TwoBranchNet,
    build_subnet,
)

log = logging.getLogger(__name__)

Index = torch.Tensor  # (k,) long indices of kept channels


def _all(n: int) -> Index:
    return torch.arange(n)


def _kept(gate: nn.Module, n: int) -> Index:
    if isinstance(gate, ChannelGate):
        return torch.nonzero(gate.kept(), as_tuple=False).flatten().cpu()
    return _all(n)


def _chosen_paths(supernet: RTSegSupernet) -> list[list[str]]:
    paths = [[b.chosen() for b in st.mixed_blocks()] for st in supernet.stages]
    if any(p == "full" for st in paths for p in st):
        raise ValueError(
            "the supernet is in full mode: choose paths first (set_active, or set_search and search)"
        )
    return paths


def _stream_index(stage: Stage, paths: list[str]) -> Index:
    """Kept channels of a stage stream: full when an attention block runs in the stage."""
    gate = stage.stream_gate()
    full = stage.down.project[0].out_channels
    if gate is None or "mhsa" in paths:
        return _all(full)
    return _kept(gate, full)


class _Plan:
    """Kept indices of every prunable point, computed once and shared by spec and weight copy."""

    def __init__(self, supernet: RTSegSupernet):
        self.paths = _chosen_paths(supernet)
        stem = supernet.stem
        self.stem_mid = _kept(stem.gate_mid, stem.conv[0].out_channels)
        self.stem_lead = _kept(stem.gate_lead, stem.left[0][0].out_channels)
        self.stem_out = _kept(stem.gate_out, stem.fuse[0].out_channels)
        self.streams = [_stream_index(st, p) for st, p in zip(supernet.stages, self.paths, strict=True)]
        self.joint = self.streams[-1]  # last stage, last detail conv, context and BGA
        self.detail = [_kept(c.gate_out, c.conv[0].out_channels) for c in supernet.detail[:-1]] + [self.joint]
        self.down_lead = [_kept(st.down.gate_lead, st.down.lead[0].out_channels) for st in supernet.stages]
        self.down_mid = [_kept(st.down.gate_mid, st.down.expand[0].out_channels) for st in supernet.stages]
        self.block_lead = [
            [_kept(b.lir.gate_lead, b.lir.lead[0].out_channels) for b in st.mixed_blocks()] for st in supernet.stages
        ]
        self.block_mid = [
            [
                _kept(_path_module(b, p).gate_mid, _mid_width(b, p))
                for b, p in zip(st.mixed_blocks(), ps, strict=True)
            ]
            for st, ps in zip(supernet.stages, self.paths, strict=True)
        ]
        self.head_mid = _kept(supernet.head.gate_mid, supernet.head.conv[0].out_channels)


def _path_module(b: MixedBlock, path: str) -> nn.Module:
    return b.mhsa if path == "mhsa" else b.lir


def _mid_width(b: MixedBlock, path: str) -> int:
    return b.mhsa.fc1.out_features if path == "mhsa" else b.lir.expand[0].out_channels


def _spec_from_plan(supernet: RTSegSupernet, plan: _Plan) -> SubnetSpec:
    detail, cin = [], 3
    for conv, idx in zip(supernet.detail, plan.detail, strict=True):
        detail.append(ConvSpec(cin=cin, cout=len(idx), stride=conv.conv[0].stride[0]))
        cin = len(idx)
    stages, cin = [], len(plan.stem_out)
    for i, st in enumerate(supernet.stages):
        blocks = []
        parts = zip(st.mixed_blocks(), plan.paths[i], plan.block_mid[i], plan.block_lead[i], strict=True)
        for b, path, mid, lead in parts:
            if path == "lir":
                blocks.append(LIRSpec(cmid=len(mid), clead=len(lead)))
            elif path == "mhsa":
                blocks.append(MHSASpec(heads=b.mhsa.heads, patch=b.mhsa.patch, cmid=len(mid)))
        down = DownSpec(cin=cin, cmid=len(plan.down_mid[i]), cout=len(plan.streams[i]), clead=len(plan.down_lead[i]))
        stages.append(StageSpec(down=down, blocks=blocks))
        cin = down.cout
    return SubnetSpec(
        num_classes=supernet.num_classes,
        detail=detail,
        stem=len(plan.stem_out),
        stem_mid=len(plan.stem_mid),
        stem_lead=len(plan.stem_lead),
        stages=stages,
        head_mid=len(plan.head_mid),
        aux_mid=supernet.aux_heads[0].conv[0].out_channels,
    )


def subnet_spec(supernet: RTSegSupernet) -> dict:
    """JSON-able spec of the chosen subnet; ``build_model("subnet", spec=...)`` rebuilds it."""
    return _spec_from_plan(supernet, _Plan(supernet)).model_dump()


# ----- weight copy ---------------------------------------------------------------------------


@torch.no_grad()
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, out_idx: Index) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[out_idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def _copy_conv_bn(dst: nn.Sequential, src: nn.Sequential, out_idx: Index, in_idx: Index | None) -> None:
    """Conv (+BN): ``in_idx`` None for depthwise convs (their input follows the output)."""
    w = src[0].weight[out_idx]
    dst[0].weight.copy_(w if in_idx is None else w[:, in_idx])
    if len(src) > 1 and isinstance(src[1], nn.BatchNorm2d):
        _copy_bn(dst[1], src[1], out_idx)


@torch.no_grad()
def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, out_idx: Index, in_idx: Index) -> None:
    dst.weight.copy_(src.weight[out_idx][:, in_idx])


@torch.no_grad()
def _copy_stem(dst: nn.Module, src: nn.Module, plan: _Plan) -> None:
    mid, lead, out = plan.stem_mid, plan.stem_lead, plan.stem_out
    _copy_conv_bn(dst.conv, src.conv, mid, _all(src.conv[0].in_channels))
    _copy_conv_bn(dst.left[0], src.left[0], lead, mid)
    _copy_conv_bn(dst.left[1], src.left[1], mid, lead)
    concat = torch.cat([mid, mid + src.conv[0].out_channels])  # left branch, then the max-pool
    _copy_conv_bn(dst.fuse, src.fuse, out, concat)


@torch.no_grad()
def _copy_context(dst: nn.Module, src: nn.Module, idx: Index) -> None:
    _copy_bn(dst.bn, src.bn, idx)
    _copy_conv_bn(dst.gap_conv, src.gap_conv, idx, idx)
    _copy_conv_bn(dst.last, src.last, idx, idx)


@torch.no_grad()
def _copy_bga(dst: nn.Module, src: nn.Module, idx: Index) -> None:
    for name in ("left1", "right2"):  # depthwise conv-BN, then a bare 1x1 conv
        _copy_conv_bn(getattr(dst, name)[0], getattr(src, name)[0], idx, None)
        _copy_conv(getattr(dst, name)[1], getattr(src, name)[1], idx, idx)
    _copy_conv_bn(dst.left2[0], src.left2[0], idx, idx)
    _copy_conv_bn(dst.right1, src.right1, idx, idx)
    _copy_conv_bn(dst.fuse, src.fuse, idx, idx)


@torch.no_grad()
def _copy_down(dst: nn.Module, src: nn.Module, in_idx: Index, lead: Index, mid: Index, out_idx: Index) -> None:
    _copy_conv_bn(dst.lead, src.lead, lead, in_idx)
    _copy_conv_bn(dst.expand, src.expand, mid, lead)
    _copy_conv_bn(dst.dw, src.dw, mid, None)
    _copy_conv_bn(dst.dw2, src.dw2, mid, None)
    _copy_conv_bn(dst.project, src.project, out_idx, mid)
    _copy_conv_bn(dst.short_dw, src.short_dw, in_idx, None)
    _copy_conv_bn(dst.short_pw, src.short_pw, out_idx, in_idx)


@torch.no_grad()
def _copy_lir(dst: nn.Module, src: nn.Module, stream: Index, lead: Index, mid: Index) -> None:
    _copy_conv_bn(dst.lead, src.lead, lead, stream)
    _copy_conv_bn(dst.expand, src.expand, mid, lead)
    _copy_conv_bn(dst.dw, src.dw, mid, None)
    _copy_conv_bn(dst.project, src.project, stream, mid)


@torch.no_grad()
def _copy_mhsa(dst: nn.Module, src: nn.Module, mid: Index) -> None:
    for name in ("norm1", "qkv", "proj", "norm2"):
        getattr(dst, name).load_state_dict(getattr(src, name).state_dict())
    dst.fc1.weight.copy_(src.fc1.weight[mid])
    dst.fc1.bias.copy_(src.fc1.bias[mid])
    dst.fc2.weight.copy_(src.fc2.weight[:, mid])
    dst.fc2.bias.copy_(src.fc2.bias)


@torch.no_grad()
def _copy_head(dst: nn.Module, src: nn.Module, in_idx: Index, mid: Index) -> None:
    _copy_conv_bn(dst.conv, src.conv, mid, in_idx)
    dst.cls.weight.copy_(src.cls.weight[:, mid])
    dst.cls.bias.copy_(src.cls.bias)


def _copy_weights(net: TwoBranchNet, supernet: RTSegSupernet, plan: _Plan) -> None:
    in_idx = _all(3)
    for dst, src, idx in zip(net.detail, supernet.detail, plan.detail, strict=True):
        _copy_conv_bn(dst.conv, src.conv, idx, in_idx)
        in_idx = idx
    _copy_stem(net.stem, supernet.stem, plan)
    _copy_context(net.context, supernet.context, plan.joint)
    _copy_bga(net.bga, supernet.bga, plan.joint)
    in_idx, streams = plan.stem_out, [plan.stem_out]
    for i, (dst, src) in enumerate(zip(net.stages, supernet.stages, strict=True)):
        stream = plan.streams[i]
        _copy_down(dst.down, src.down, in_idx, plan.down_lead[i], plan.down_mid[i], stream)
        chosen = list(zip(src.mixed_blocks(), plan.paths[i], plan.block_mid[i], plan.block_lead[i], strict=True))
        for d, (b, path, mid, lead) in zip(dst.blocks, [c for c in chosen if c[1] != "skip"], strict=True):
            if path == "lir":
                _copy_lir(d, b.lir, stream, lead, mid)
            else:
                _copy_mhsa(d, b.mhsa, mid)
        in_idx = stream
        streams.append(stream)
    _copy_head(net.head, supernet.head, plan.joint, plan.head_mid)
    for dst, src, idx in zip(net.aux_heads, supernet.aux_heads, streams, strict=True):
        _copy_head(dst, src, idx, _all(src.conv[0].out_channels))


def derive(supernet: RTSegSupernet) -> TwoBranchNet:
    """The compact network: chosen paths only, kept channels only, weights copied and sliced."""
    plan = _Plan(supernet)
    spec = _spec_from_plan(supernet, plan)
    net = build_subnet(spec).to(next(supernet.parameters()).device)
    _copy_weights(net, supernet, plan)
    net.train(supernet.training)
    log.info("derived subnet: %s", spec.model_dump_json())
    return net
