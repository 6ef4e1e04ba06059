"""The RTSeg supernet: a wide BiSeNetV2-style dual-branch network with mixed blocks.

Detail branch: 3x3 ConvBlocks in three groups (first of each stride 2) to H/8. Segment branch:
StemBlock to H/4, then three stages (H/8, H/16, H/32), each a DownBlock followed by mixed blocks
(paper Fig. 1: "Mix Block x2, Mix Block x3, ..."); every mixed block chooses skip | LIRBlock |
MHSABlock. ContextBlock on the last stage, BGABlock, HeadBlock (3x3 -> classes, x8) as the light
decoder, aux HeadBlocks on the stem and after each stage.

**Counting convention** (Table 1 of the paper: 24.43 M params, 136 GMACs at 512x1024): the
supernet is counted in its ``full`` mode, the mode it is pretrained in and teaches from, where every
mixed block runs both its LIR and its MHSA path (outputs averaged). Params are all weights of the
inference graph (both paths of every mixed block, no aux heads); MACs are those of the same graph
(both paths computed). With the default :class:`SupernetConfig` that is 24.76 M params and
135.63 GMACs at 512x1024 (``search_client.count``; the paper's 24.43 M / 136.0 within 1.3 %).
Of those GMACs the wide detail branch is 82.6, the head 15.8, BGA 6.9, the stem 3.5, MHSA paths
16.1, LIR paths 6.7, down blocks 3.7.

Search vocabulary (once-for-all style): ``set_active(config)`` / ``active_config()`` /
``sample_active(rng)``; ``set_search(tau)`` switches every mixed block to hard Gumbel sampling;
``install_gates()`` puts DWBC channel gates into the prunable points; ``arch_parameters()``,
``gate_parameters()`` and ``weight_parameters()`` split the parameters for separate optimizers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from search_client.models.channel_gate import ChannelGate, gate_parameters, gates_of
from search_client.models.mixed_block import PATHS, MixedBlock
from search_client.models.twobranch import AUX_SCALES, Stage, TwoBranchNet
from shared.blocks import ConvBlock, DownBlock, HeadBlock, StemBlock

Triple = tuple[int, int, int]


class SupernetConfig(BaseModel):
    """Widths and depths of the supernet; defaults give the paper's size (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detail_widths: Triple = (128, 256, 256)
    detail_depths: Triple = (2, 3, 3)
    stem: int = Field(64, ge=2)
    stage_widths: Triple = (96, 128, 256)
    depths: Triple = (2, 3, 4)
    down_expansion: int = Field(4, ge=1)
    lir_expansion: int = Field(4, ge=1)
    heads: Triple = (4, 4, 8)
    patches: Triple = (2, 2, 1)
    mhsa_mid: Triple = (512, 1024, 512)
    head_mid: int = Field(832, ge=1)
    aux_mid: int = Field(128, ge=1)


class RTSegSupernet(TwoBranchNet):
    def __init__(self, num_classes: int = 19, config: SupernetConfig | None = None):
        cfg = config or SupernetConfig()
        if cfg.stage_widths[-1] != cfg.detail_widths[-1]:
            raise ValueError("the last stage width must equal the last detail width (BGA joins them)")
        stages, cin = [], cfg.stem
        for i, c in enumerate(cfg.stage_widths):
            blocks = [
                MixedBlock(c, c * cfg.lir_expansion, cfg.heads[i], cfg.patches[i], cfg.mhsa_mid[i])
                for _ in range(cfg.depths[i])
            ]
            stages.append(Stage(DownBlock(cin, cin * cfg.down_expansion, c), blocks))
            cin = c
        widths = [cfg.stem, *cfg.stage_widths]
        aux = [HeadBlock(c, cfg.aux_mid, num_classes, s) for c, s in zip(widths, AUX_SCALES, strict=True)]
        head = HeadBlock(cfg.detail_widths[-1], cfg.head_mid, num_classes, 8)
        super().__init__(_detail(cfg), StemBlock(3, cfg.stem), stages, head, aux, num_classes)
        self.config = cfg

    # ----- block search -------------------------------------------------------------------
    def mixed_blocks(self) -> list[MixedBlock]:
        return [b for st in self.stages for b in st.mixed_blocks()]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [b.arch_logits for b in self.mixed_blocks()]

    def gate_parameters(self) -> list[nn.Parameter]:
        return gate_parameters(self)

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but architecture logits and gate weights (the aux heads included)."""
        special = {id(p) for p in self.arch_parameters() + self.gate_parameters()}
        return (p for p in self.parameters() if id(p) not in special)

    def set_search(self, tau: float = 10.0, generator: torch.Generator | None = None) -> None:
        """Every mixed block samples its path by hard Gumbel-softmax (argmax in eval mode)."""
        for b in self.mixed_blocks():
            b.mode, b.tau, b.generator = "gumbel", tau, generator

    def set_temperature(self, tau: float) -> None:
        for b in self.mixed_blocks():
            b.tau = tau

    def set_active(self, config: dict | list[str] | None) -> None:
        """Fix each mixed block's path: ``{"paths": [...], "widths": {...}}`` or a list of
        ``skip|lir|mhsa``; ``None`` or ``"full"`` entries select the full (both paths) mode.
        ``widths`` (gate name -> kept count, needs installed gates) keeps the first k channels."""
        paths = config.get("paths") if isinstance(config, dict) else config
        blocks = self.mixed_blocks()
        if paths is None:
            paths = ["full"] * len(blocks)
        if len(paths) != len(blocks):
            raise ValueError(f"need {len(blocks)} paths (one per mixed block), got {len(paths)}")
        for b, p in zip(blocks, paths, strict=True):
            if p not in (*PATHS, "full"):
                raise ValueError(f"unknown path {p!r}; use one of {', '.join(PATHS)} or 'full'")
            b.mode = p
        if isinstance(config, dict) and config.get("widths"):
            self._set_widths(config["widths"])

    def _named_gates(self) -> dict[str, ChannelGate]:
        return {name: m for name, m in self.named_modules() if isinstance(m, ChannelGate)}

    @torch.no_grad()
    def _set_widths(self, widths: dict[str, int]) -> None:
        gates = self._named_gates()
        for name, k in widths.items():
            if name not in gates:
                raise ValueError(f"no gate named {name!r} (install_gates first); gates: {', '.join(gates)}")
            gate = gates[name]
            if not gate.floor <= k <= gate.channels:
                raise ValueError(f"width {k} of {name} outside [{gate.floor}, {gate.channels}]")
            gate.weight.fill_(0.0)
            gate.weight[:k] = 1.0

    def active_config(self) -> dict:
        """Current choice: paths (argmax under search), kept widths and gate sizes per gate name."""
        gates = self._named_gates()
        widths = {name: g.kept_count() for name, g in gates.items()}
        return {"paths": [b.chosen() for b in self.mixed_blocks()], "widths": widths,
                "channels": {name: g.channels for name, g in gates.items()}}

    def sample_active(self, rng: random.Random, widths: bool = False) -> dict:
        """Random single-path choice (uniform over skip | lir | mhsa) and, with ``widths`` and
        installed gates, a uniform kept width per gate; sets and returns it."""
        config: dict = {"paths": [rng.choice(PATHS) for _ in self.mixed_blocks()]}
        if widths:
            config["widths"] = {n: rng.randint(g.floor, g.channels) for n, g in self._named_gates().items()}
        self.set_active(config)
        return config

    # ----- width search -------------------------------------------------------------------
    def install_gates(
        self, init: float = 0.6, floor_ratio: float = 0.1, min_channels: int = 4
    ) -> list[ChannelGate]:
        """Replace the prunable placeholders with DWBC gates, one after every conv layer; returns
        the distinct gates.

        Own gates: the stem's inner widths and output, every detail conv but the last, the leading
        3x3 and hidden width of every down and LIR block, MHSA's hidden width, the head's hidden
        width. Shared gates, for channels tied by a residual add or by BGA: a stage's stream (its
        down block's output and every LIR output after the residual add; again after the next
        down block's shortcut depthwise conv), and one joint gate for the last stage's stream, the
        last detail conv, the context block and BGA. Aux heads (training only) stay full.
        """

        def gate(channels: int, dim: int = 1) -> ChannelGate:
            return ChannelGate(channels, init, max(min_channels, int(floor_ratio * channels)), dim)

        stem = self.stem
        stem.gate_mid, stem.gate_lead = gate(stem.conv[0].out_channels), gate(stem.left[0][0].out_channels)
        stem.gate_out = previous = gate(stem.fuse[0].out_channels)
        joint = gate(self.detail[-1].conv[0].out_channels)
        for conv in self.detail:
            conv.gate_out = joint if conv is self.detail[-1] else gate(conv.conv[0].out_channels)
        for i, stage in enumerate(self.stages):
            down = stage.down
            down.gate_lead, down.gate_mid = gate(down.lead[0].out_channels), gate(down.expand[0].out_channels)
            down.gate_in = previous
            down.gate_out = stream = joint if i == len(self.stages) - 1 else gate(down.project[0].out_channels)
            for b in stage.mixed_blocks():
                b.lir.gate_lead = gate(b.lir.lead[0].out_channels)
                b.lir.gate_mid = gate(b.lir.expand[0].out_channels)
                b.lir.gate_out = stream
                b.mhsa.gate_mid = gate(b.mhsa.fc1.out_features, dim=-1)
            previous = stream
        self.context.gate_out = self.bga.gate_out = joint
        self.head.gate_mid = gate(self.head.conv[0].out_channels)
        return gates_of(self)


def _detail(cfg: SupernetConfig) -> list[ConvBlock]:
    layers, cin = [], 3
    for width, depth in zip(cfg.detail_widths, cfg.detail_depths, strict=True):
        for j in range(depth):
            layers.append(ConvBlock(cin, width, 3, 2 if j == 0 else 1))
            cin = width
    return layers
