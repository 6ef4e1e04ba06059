"""Torch modules for every block kind: the block that is profiled is the block that is trained.

Prunable points carry an ``nn.Identity`` placeholder (``gate_lead`` / ``gate_mid`` / ``gate_out`` /
``gate_in``) after every conv, which the search client replaces with a channel gate; in a plain block
they cost nothing. ``gate_lead`` gates the leading conv's width (``clead``), ``gate_mid`` the hidden
width (``cmid``), ``gate_out`` the output channels. In ``MHSABlock`` the gate acts on the last
(token feature) dimension, everywhere else on dim 1 (NCHW).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = conv_bn(cin, cout, kernel, stride)
        self.gate_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_out(self.conv(x))


class LIRBlock(nn.Module):
    """Paper Fig. 2b: 3x3 conv (s1) -> 1x1 expand -> kxk depthwise (stride) -> 1x1 project, identity
    residual when shapes allow. The leading 3x3 conv with the depthwise conv gives the 5x5 receptive
    field of two stacked 3x3 convs. Gates: ``gate_lead`` (clead), ``gate_mid`` (cmid, after the
    expand and the depthwise conv), ``gate_out`` (cout, after the residual add)."""

    def __init__(self, cin: int, cmid: int, cout: int, kernel: int = 3, stride: int = 1, clead: int | None = None):
        super().__init__()
        clead = clead or cin
        self.lead = conv_bn(cin, clead, 3)
        self.expand = conv_bn(clead, cmid, 1)
        self.dw = conv_bn(cmid, cmid, kernel, stride, groups=cmid)
        self.project = conv_bn(cmid, cout, 1, relu=False)
        self.residual = stride == 1 and cin == cout
        self.gate_lead = nn.Identity()
        self.gate_mid = nn.Identity()
        self.gate_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate_lead(self.lead(x))
        y = self.gate_mid(self.expand(y))
        y = self.gate_mid(self.dw(y))
        y = self.project(y)
        if self.residual:
            y = y + x
        return self.gate_out(y)


class DownBlock(nn.Module):
    """Paper Fig. 2a, stride 2: main 3x3 conv (s1) -> 1x1 -> dw3x3 s2 -> dw3x3 s1 -> 1x1, shortcut
    dw3x3 s2 -> 1x1, add, ReLU. Gates: ``gate_lead`` (clead), ``gate_mid`` (cmid, after the 1x1 and
    both depthwise convs), ``gate_out`` (cout, after the add), ``gate_in`` (cin: the gate of the
    block's input, after the shortcut's depthwise conv, whose BN turns a pruned zero channel into a
    constant)."""

    def __init__(self, cin: int, cmid: int, cout: int, clead: int | None = None):
        super().__init__()
        clead = clead or cin
        self.lead = conv_bn(cin, clead, 3)
        self.expand = conv_bn(clead, cmid, 1)
        self.dw = conv_bn(cmid, cmid, 3, 2, groups=cmid)
        self.dw2 = conv_bn(cmid, cmid, 3, 1, groups=cmid)
        self.project = conv_bn(cmid, cout, 1, relu=False)
        self.short_dw = conv_bn(cin, cin, 3, 2, groups=cin, relu=False)
        self.short_pw = conv_bn(cin, cout, 1, relu=False)
        self.gate_in = nn.Identity()  # the input's gate, again after the shortcut's depthwise conv
        self.gate_lead = nn.Identity()
        self.gate_mid = nn.Identity()
        self.gate_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate_lead(self.lead(x))
        y = self.gate_mid(self.expand(y))
        y = self.gate_mid(self.dw(y))
        y = self.gate_mid(self.dw2(y))
        y = self.project(y) + self.short_pw(self.gate_in(self.short_dw(x)))
        return self.gate_out(F.relu(y))


class MHSABlock(nn.Module):
    """Patchify (B,C,H,W)->(B,N,p*p*C), pre-LN attention + MLP with residuals, de-patch.

    Attention is written from plain ops so that the legacy ONNX exporter and TFLite handle it.
    """

    def __init__(self, cin: int, heads: int, patch: int, cmid: int):
        super().__init__()
        self.heads, self.patch = heads, patch
        dim = cin * patch * patch
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cmid)
        self.act = nn.GELU()
        self.gate_mid = nn.Identity()  # acts on the last dim (B, N, cmid)
        self.fc2 = nn.Linear(cmid, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)
        t = t + self._attend(self.norm1(t))
        t = t + self.fc2(self.gate_mid(self.act(self.fc1(self.norm2(t)))))
        return t.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)

    def _attend(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        hd = d // self.heads
        qkv = self.qkv(t).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class StemBlock(nn.Module):
    """BiSeNetV2 stem to H/4: 3x3 s2 (cmid), then (1x1 to clead -> 3x3 s2 to cmid) beside a
    max-pool, concat, 3x3 fuse (cout). Gates: ``gate_mid`` (cmid: the first conv, which the
    max-pool passes on, and the left 3x3), ``gate_lead`` (clead), ``gate_out`` (cout)."""

    def __init__(self, cin: int, cout: int, cmid: int | None = None, clead: int | None = None):
        super().__init__()
        cmid = cmid or cout
        clead = clead or max(1, cmid // 2)
        self.conv = conv_bn(cin, cmid, 3, 2)
        self.left = nn.Sequential(conv_bn(cmid, clead, 1), conv_bn(clead, cmid, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1, ceil_mode=False)
        self.fuse = conv_bn(2 * cmid, cout, 3)
        self.gate_mid = nn.Identity()
        self.gate_lead = nn.Identity()
        self.gate_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate_mid(self.conv(x))
        left = self.gate_mid(self.left[1](self.gate_lead(self.left[0](x))))
        return self.gate_out(self.fuse(torch.cat([left, self.right(x)], dim=1)))


class ContextBlock(nn.Module):
    """Context embedding: global pool -> BN -> 1x1 conv-BN-ReLU -> broadcast add -> 3x3 conv-BN-ReLU.

    Every channel is tied by the add, so one gate (``gate_out``) acts after the BN of the pooled
    vector (a pruned channel's BN constant would otherwise reach the 1x1 conv) and after each conv."""

    def __init__(self, cin: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.gap_conv = conv_bn(cin, cin, 1)
        self.last = conv_bn(cin, cin, 3)
        self.gate_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_out(self.gap_conv(self.gate_out(self.bn(torch.mean(x, dim=(2, 3), keepdim=True)))))
        return self.gate_out(self.last(x + g))


class BGABlock(nn.Module):
    """Bilateral guided aggregation of a detail map (C,H,W) and a semantic map (C,H/4,W/4).

    The branches multiply channel by channel, so one gate (``gate_out``) acts after every conv
    (depthwise ones included: BN turns a pruned zero channel into a constant)."""

    def __init__(self, cin: int):
        super().__init__()
        c = cin
        self.left1 = nn.Sequential(conv_bn(c, c, 3, groups=c, relu=False), nn.Conv2d(c, c, 1, bias=False))
        self.left2 = nn.Sequential(conv_bn(c, c, 3, 2, relu=False), nn.AvgPool2d(3, 2, 1, ceil_mode=False))
        self.right1 = conv_bn(c, c, 3, relu=False)
        self.right2 = nn.Sequential(conv_bn(c, c, 3, groups=c, relu=False), nn.Conv2d(c, c, 1, bias=False))
        self.fuse = conv_bn(c, c, 3)
        self.gate_out = nn.Identity()

    def _pair(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return self.gate_out(seq[1](self.gate_out(seq[0](x))))

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        g, size = self.gate_out, detail.shape[2:]
        left = self._pair(self.left1, detail) * torch.sigmoid(upsample(g(self.right1(semantic)), size))
        down = self.left2[1](g(self.left2[0](detail)))
        right = upsample(down * torch.sigmoid(self._pair(self.right2, semantic)), size)
        return g(self.fuse(left + right))


class HeadBlock(nn.Module):
    def __init__(self, cin: int, cmid: int, classes: int, scale: int = 1):
        super().__init__()
        self.conv = conv_bn(cin, cmid, 3)
        self.gate_mid = nn.Identity()
        self.cls = nn.Conv2d(cmid, classes, 1, bias=True)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cls(self.gate_mid(self.conv(x)))
        if self.scale > 1:
            y = upsample(y, (x.shape[2] * self.scale, x.shape[3] * self.scale))
        return y


def create_block(cfg: AnyBlock) -> nn.Module:
    """The one bridge from a config to its torch module (fresh, untrained weights)."""
    match cfg:
        case LIRConfig():
            return LIRBlock(cfg.cin, cfg.cmid, cfg.cout, cfg.kernel, cfg.stride, cfg.clead)
        case ConvConfig():
            return ConvBlock(cfg.cin, cfg.cout, cfg.kernel, cfg.stride)
        case DownConfig():
            return DownBlock(cfg.cin, cfg.cmid, cfg.cout, cfg.clead)
        case MHSAConfig():
            return MHSABlock(cfg.cin, cfg.heads, cfg.patch, cfg.cmid)
        case StemConfig():
            return StemBlock(cfg.cin, cfg.cout, cfg.cmid, cfg.clead)
        case ContextConfig():
            return ContextBlock(cfg.cin)
        case BGAConfig():
            return BGABlock(cfg.cin)
        case HeadConfig():
            return HeadBlock(cfg.cin, cfg.cmid, cfg.classes, cfg.scale)
    raise TypeError(f"no module for block config {type(cfg).__name__}")


def input_shapes(cfg: AnyBlock) -> list[tuple[int, int, int, int]]:
    """NCHW shapes of the block's inputs (batch 1)."""
    if isinstance(cfg, BGAConfig):
        return [(1, cfg.cin, cfg.h, cfg.w), (1, cfg.cin, cfg.h // 4, cfg.w // 4)]
    return [(1, cfg.cin, cfg.h, cfg.w)]


def example_inputs(cfg: AnyBlock, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=gen) for shape in input_shapes(cfg))
