"""The dual-branch network skeleton shared by the RTSeg supernet and every subnet derived from it.

Detail branch (3x3 ConvBlocks, three of them stride 2, to H/8) beside a segment branch (StemBlock to
H/4, then stages at H/8, H/16, H/32, each a DownBlock followed by blocks that keep the width),
ContextBlock on the last stage, BGABlock joining both branches, HeadBlock x8 as the light decoder,
and aux HeadBlocks on the stem and on every stage output (training mode only). All parts are the
profiled ``shared.blocks`` modules.

A :class:`SubnetSpec` (JSON-able) describes a plain network of this shape; :func:`build_subnet`
builds it with fresh weights. Inputs are zero-padded (bottom/right) to a multiple of
:meth:`TwoBranchNet.size_divisor` (32 with the default patches) and the logits cropped back.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from search_client.models.channel_gate import ChannelGate
from search_client.models.mixed_block import MixedBlock, resample_all
from shared.blocks import (
    BGABlock,
    ContextBlock,
    ConvBlock,
    DownBlock,
    HeadBlock,
    LIRBlock,
    MHSABlock,
    StemBlock,
)

AUX_SCALES = (4, 8, 16, 32)  # stem, stage 1, 2, 3 strides


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConvSpec(_Spec):
    cin: int = Field(ge=1)
    cout: int = Field(ge=1)
    stride: int = Field(1, ge=1, le=2)


class DownSpec(_Spec):
    cin: int = Field(ge=1)
    cmid: int = Field(ge=1)
    cout: int = Field(ge=1)
    clead: int | None = Field(None, ge=1, description="leading 3x3 conv width (default: cin)")


class LIRSpec(_Spec):
    path: Literal["lir"] = "lir"
    cmid: int = Field(ge=1)
    clead: int | None = Field(None, ge=1, description="leading 3x3 conv width (default: the stream)")


class MHSASpec(_Spec):
    path: Literal["mhsa"] = "mhsa"
    heads: int = Field(ge=1)
    patch: int = Field(ge=1)
    cmid: int = Field(ge=1)


BlockSpec = Annotated[LIRSpec | MHSASpec, Field(discriminator="path")]


class StageSpec(_Spec):
    down: DownSpec
    blocks: list[BlockSpec] = Field(default_factory=list)


class SubnetSpec(_Spec):
    """A plain dual-branch network: every width and every chosen path (skipped blocks are absent)."""

    num_classes: int = Field(19, ge=1)
    detail: list[ConvSpec] = Field(min_length=1)
    stem: int = Field(ge=1, description="stem output channels")
    stem_mid: int | None = Field(None, ge=1, description="stem's first conv width (default: stem)")
    stem_lead: int | None = Field(None, ge=1, description="stem's left 1x1 width (default: stem_mid // 2)")
    stages: list[StageSpec] = Field(min_length=3, max_length=3)
    head_mid: int = Field(ge=1)
    aux_mid: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SubnetSpec:
        if sum(c.stride == 2 for c in self.detail) != 3:
            raise ValueError("the detail branch needs exactly three stride-2 convs (H/8)")
        for a, b in zip(self.detail[:-1], self.detail[1:], strict=True):
            if a.cout != b.cin:
                raise ValueError(f"detail conv widths do not chain: {a.cout} -> {b.cin}")
        cin = self.stem
        for i, st in enumerate(self.stages):
            if st.down.cin != cin:
                raise ValueError(f"stage {i} down block takes {st.down.cin} channels, previous gives {cin}")
            cin = st.down.cout
        if cin != self.detail[-1].cout:
            raise ValueError(f"BGA joins equal widths: segment {cin} vs detail {self.detail[-1].cout}")
        return self

    @property
    def width(self) -> int:
        return self.detail[-1].cout


class Stage(nn.Module):
    """DownBlock then width-keeping blocks. With search gates, the down block's ``gate_out`` is the
    stage's stream gate; it is disabled for a forward in which any block runs attention (a pruned
    zero channel would change LayerNorm statistics, so an attention stream stays full). The last
    stage's stream gate is shared with the last detail conv, the context block and BGA, so
    :class:`TwoBranchNet` sets it before the detail branch runs."""

    def __init__(self, down: DownBlock, blocks: list[nn.Module]):
        super().__init__()
        self.down = down
        self.blocks = nn.ModuleList(blocks)

    def mixed_blocks(self) -> list[MixedBlock]:
        return [b for b in self.blocks if isinstance(b, MixedBlock)]

    def stream_gate(self) -> ChannelGate | None:
        gate = self.down.gate_out
        return gate if isinstance(gate, ChannelGate) else None

    def update_stream_gate(self) -> None:
        """Enable the stream gate unless a block runs attention in the next forward."""
        mixed = self.mixed_blocks()
        if self.training:
            resample_all([b for b in mixed if b.mode == "gumbel" and not b.pending()])
        gate = self.stream_gate()
        if gate is not None:
            gate.enabled = not any(b.runs_mhsa() for b in mixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.update_stream_gate()
        x = self.down(x)
        for block in self.blocks:
            x = block(x)
        return x


class TwoBranchNet(nn.Module):
    """Forward contract: train mode -> {"out", "aux"}; eval mode -> main logits only."""

    def __init__(
        self,
        detail: list[ConvBlock],
        stem: StemBlock,
        stages: list[Stage],
        head: HeadBlock,
        aux_heads: list[HeadBlock],
        num_classes: int,
    ):
        super().__init__()
        width = detail[-1].conv[0].out_channels
        self.num_classes = num_classes
        self.detail = nn.Sequential(*detail)
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.context = ContextBlock(width)
        self.bga = BGABlock(width)
        self.head = head
        self.aux_heads = nn.ModuleList(aux_heads)

    def size_divisor(self) -> int:
        """Input sides must be multiples of this: 32 for the branches, more where an attention
        block's patch must tile its stage's map."""
        divisor = 32
        for i, stage in enumerate(self.stages):
            for b in stage.blocks:
                attn = b.mhsa if isinstance(b, MixedBlock) else b
                if isinstance(attn, MHSABlock):
                    divisor = math.lcm(divisor, 8 * 2**i * attn.patch)
        return divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, object]:
        size = x.shape[2:]
        if self.training:  # every sampled path of this forward in one draw
            resample_all([b for st in self.stages for b in st.mixed_blocks() if b.mode == "gumbel"])
        for stage in self.stages:
            stage.update_stream_gate()
        x = pad_to_multiple(x, self.size_divisor())
        detail = self.detail(x)  # (B, C, H/8, W/8)
        feats = [self.stem(x)]  # (B, C0, H/4, W/4)
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        out = to_size(self.head(self.bga(detail, self.context(feats[-1]))), size)
        if not self.training:
            return out
        aux = [to_size(head(f), size) for head, f in zip(self.aux_heads, feats, strict=True)]
        return {"out": out, "aux": aux}


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad bottom/right so both sides divide ``divisor`` (e.g. VOC's 513x513 crops); the
    logits are cropped back. Sizes that already divide (Cityscapes, ADE20K) pass untouched."""
    h, w = x.shape[2:]
    ph, pw = -h % divisor, -w % divisor
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def to_size(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Crop logits of a padded input back to the input size. Unpadded logits are returned as they
    are: an always-on slice, traced for export, left two full-resolution Slice ops in the graph
    (~15 % of the network's time at 256x512 on the host) that no profiled block accounts for."""
    if tuple(logits.shape[2:]) == tuple(size):
        return logits
    return logits[:, :, : size[0], : size[1]]


def _plain_block(spec: LIRSpec | MHSASpec, channels: int) -> nn.Module:
    if isinstance(spec, LIRSpec):
        return LIRBlock(channels, spec.cmid, channels, clead=spec.clead)
    return MHSABlock(channels, spec.heads, spec.patch, spec.cmid)


def build_subnet(spec: SubnetSpec | dict | str) -> TwoBranchNet:
    """A plain network from its spec (a SubnetSpec, its dict, or its JSON text); fresh weights."""
    if isinstance(spec, str):
        spec = SubnetSpec.model_validate_json(spec)
    elif isinstance(spec, dict):
        spec = SubnetSpec.model_validate(spec)
    detail = [ConvBlock(c.cin, c.cout, 3, c.stride) for c in spec.detail]
    stages = [
        Stage(
            DownBlock(s.down.cin, s.down.cmid, s.down.cout, s.down.clead),
            [_plain_block(b, s.down.cout) for b in s.blocks],
        )
        for s in spec.stages
    ]
    widths = [spec.stem] + [s.down.cout for s in spec.stages]
    aux = [HeadBlock(c, spec.aux_mid, spec.num_classes, s) for c, s in zip(widths, AUX_SCALES, strict=True)]
    head = HeadBlock(spec.width, spec.head_mid, spec.num_classes, 8)
    stem = StemBlock(3, spec.stem, spec.stem_mid, spec.stem_lead)
    return TwoBranchNet(detail, stem, stages, head, aux, spec.num_classes)
