"""BiSeNetV2 (Yu et al., IJCV 2021), the baseline RTSeg compares to.

Layer layout of the BiSeNetV2 paper: detail branch of 3x3 conv-BN-ReLU (64, 64, 128 at H/2, H/4, H/8),
segment branch with the stem (16 ch at H/4), gather-and-expand layers (expansion 6, grouped /
depthwise 3x3) to 32, 64, 128 channels at H/8, H/16, H/32, context embedding, bilateral guided
aggregation and the head 128 -> 1024 -> classes, x8. Four aux heads (stem, H/8, H/16, H/32 before
the context embedding) run in training mode only. The stem, context embedding, BGA and heads are the
profiled ``shared.blocks`` modules, so the parts RTSeg shares with BiSeNetV2 are literally the same.

At 512x1024 and 19 classes the inference graph (no aux heads) is 24.60 GMACs, 3.36 M params.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.blocks import BGABlock, ContextBlock, HeadBlock, StemBlock, conv_bn

EXPANSION = 6
AUX_MID = 128


class GatherExpand(nn.Module):
    """Stride-1 gather-and-expand layer: 3x3 conv, grouped 3x3 expand (x6), 1x1 project, residual."""

    def __init__(self, cin: int, cout: int, expansion: int = EXPANSION):
        super().__init__()
        mid = cin * expansion
        self.conv = conv_bn(cin, cin, 3)
        self.dw = conv_bn(cin, mid, 3, groups=cin)
        self.project = conv_bn(mid, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.dw(self.conv(x))) + x)


class GatherExpandDown(nn.Module):
    """Stride-2 gather-and-expand layer with a depthwise + 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, expansion: int = EXPANSION):
        super().__init__()
        mid = cin * expansion
        self.conv = conv_bn(cin, cin, 3)
        self.dw1 = conv_bn(cin, mid, 3, stride=2, groups=cin, relu=False)
        self.dw2 = conv_bn(mid, mid, 3, groups=mid)
        self.project = conv_bn(mid, cout, 1, relu=False)
        self.shortcut = nn.Sequential(
            conv_bn(cin, cin, 3, stride=2, groups=cin, relu=False), conv_bn(cin, cout, 1, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw2(self.dw1(self.conv(x))))
        return F.relu(y + self.shortcut(x))


def _detail_branch() -> nn.Sequential:
    layers = [
        conv_bn(3, 64, stride=2), conv_bn(64, 64),
        conv_bn(64, 64, stride=2), conv_bn(64, 64), conv_bn(64, 64),
        conv_bn(64, 128, stride=2), conv_bn(128, 128), conv_bn(128, 128),
    ]  # fmt: skip
    return nn.Sequential(*layers)


class BiSeNetV2(nn.Module):
    def __init__(self, num_classes: int = 19, head_mid: int = 1024):
        super().__init__()
        self.num_classes = num_classes
        self.detail = _detail_branch()
        self.stem = StemBlock(3, 16)
        self.stages = nn.ModuleList([
            nn.Sequential(GatherExpandDown(16, 32), GatherExpand(32, 32)),
            nn.Sequential(GatherExpandDown(32, 64), GatherExpand(64, 64)),
            nn.Sequential(GatherExpandDown(64, 128), *[GatherExpand(128, 128) for _ in range(3)]),
        ])  # fmt: skip
        self.context = ContextBlock(128)
        self.bga = BGABlock(128)
        self.head = HeadBlock(128, head_mid, num_classes, scale=8)
        self.aux_heads = nn.ModuleList(
            HeadBlock(c, AUX_MID, num_classes, scale=s) for c, s in ((16, 4), (32, 8), (64, 16), (128, 32))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, object]:
        size = x.shape[2:]
        detail = self.detail(x)
        feats = [self.stem(x)]  # (B, 16, H/4, W/4)
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        out = _to_size(self.head(self.bga(detail, self.context(feats[-1]))), size)
        if not self.training:
            return out
        aux = [_to_size(head(f), size) for head, f in zip(self.aux_heads, feats, strict=True)]
        return {"out": out, "aux": aux}


def _to_size(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Heads upsample by their stride; inputs not divisible by 32 need a final resize."""
    if logits.shape[2:] == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
