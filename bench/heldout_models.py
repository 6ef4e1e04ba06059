"""Held-out real architectures, built in code (no torchvision), for the ONNX latency bench.

None of them is used to train a predictor or to choose the kernel space: they only judge it.
Widths and depths follow the published networks; weights are random (latency does not depend on
them). Each builder returns an eval-mode module taking (1, 3, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _div(v: float, d: int = 8) -> int:
    return max(d, int(v + d / 2) // d * d)


def cba(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SE(nn.Module):
    def __init__(self, c: int, mid: int, gate: type[nn.Module] = nn.Hardsigmoid, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1, self.fc2, self.act, self.gate = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1), act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, exp: int, act=nn.ReLU6, se: int = 0, se_gate=nn.Hardsigmoid, se_act=nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = [cba(cin, exp, 1, act=act)] if exp != cin else []
        layers.append(cba(exp, exp, k, s, exp, act=act))
        if se:
            layers.append(SE(exp, se, se_gate, se_act))
        layers.append(cba(exp, cout, 1, act=None))
        self.body, self.res = nn.Sequential(*layers), s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.res else y


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[nn.Module] = [cba(3, 32, 3, 2, act=nn.ReLU6)]
    cin = 32
    for t, c, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, 3, s if i == 0 else 1, cin * t))
            cin = c
    layers += [cba(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1), (5, 96, 40, True, hs, 2),
           (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1), (5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1),
           (5, 288, 96, True, hs, 2), (5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]
    layers: list[nn.Module] = [cba(3, 16, 3, 2, act=hs)]
    cin = 16
    for k, exp, c, se, act, s in cfg:
        layers.append(InvertedResidual(cin, c, k, s, exp, act=act, se=_div(exp / 4) if se else 0))
        cin = c
    layers += [cba(cin, 576, 1, act=hs), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), hs(),
               nn.Linear(1024, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, s: int):
        super().__init__()
        self.a, self.b = cba(cin, cout, 3, s), cba(cout, cout, 3, act=None)
        self.down = cba(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(self.a(x)) + self.down(x))


def resnet18(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [cba(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for c, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, c, s), BasicBlock(c, c, 1)]
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def _shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, s: int):
        super().__init__()
        self.s, mid = s, cout // 2
        if s == 2:
            self.left = nn.Sequential(cba(cin, cin, 3, 2, cin, act=None), cba(cin, mid, 1))
        self.right = nn.Sequential(cba(cin if s == 2 else mid, mid, 1), cba(mid, mid, 3, s, mid, act=None), cba(mid, mid, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.s == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return _shuffle(out)


def shufflenet_v2(num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [cba(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for c, n in ((116, 4), (232, 8), (464, 4)):
        for i in range(n):
            layers.append(ShuffleUnit(cin, c, 2 if i == 0 else 1))
            cin = c
    layers += [cba(cin, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, num_classes)]
    return nn.Sequential(*layers)


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    cfg = [(1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1), (6, 5, 192, 4, 2),
           (6, 3, 320, 1, 1)]
    layers: list[nn.Module] = [cba(3, 32, 3, 2, act=nn.SiLU)]
    cin = 32
    for t, k, c, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, k, s if i == 0 else 1, cin * t, act=nn.SiLU, se=max(1, cin // 4),
                                           se_gate=nn.Sigmoid, se_act=nn.SiLU))
            cin = c
    layers += [cba(cin, 1280, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


class EfficientAttention(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).transpose(1, 2))
        kv = self.kv(x).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ kv[0].transpose(-2, -1) * self.scale).softmax(-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.dw, self.fc2 = nn.Linear(dim, hidden), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, _ = x.shape
        y = self.fc1(x)
        y = self.dw(y.transpose(1, 2).reshape(b, -1, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(y))


class SegFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.n1, self.attn, self.n2, self.ffn = nn.LayerNorm(dim), EfficientAttention(dim, heads, sr), nn.LayerNorm(dim), MixFFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.n1(x), h, w)
        return x + self.ffn(self.n2(x), h, w)


class SegFormerB0(nn.Module):
    """MiT-B0 encoder (dims 32/64/160/256, 2 blocks per stage, reduction 8/4/2/1) + all-MLP decoder."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        dims, heads, srs = (32, 64, 160, 256), (1, 2, 5, 8), (8, 4, 2, 1)
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        cin = 3
        for i, d in enumerate(dims):
            k, s = (7, 4) if i == 0 else (3, 2)
            self.embeds.append(nn.Sequential(nn.Conv2d(cin, d, k, s, k // 2)))
            self.stages.append(nn.ModuleList([SegFormerBlock(d, heads[i], srs[i]) for _ in range(2)]))
            self.norms.append(nn.LayerNorm(d))
            cin = d
        self.lin = nn.ModuleList([nn.Conv2d(d, 256, 1) for d in dims])
        self.fuse, self.cls = cba(4 * 256, 256, 1), nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms, strict=True):
            x = embed[0](x)
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for blk in blocks:
                t = blk(t, h, w)
            x = norm(t).transpose(1, 2).reshape(b, c, h, w)
            feats.append(x)
        size = feats[0].shape[2:]
        ups = [F.interpolate(lin(f), size=size, mode="bilinear", align_corners=False) for lin, f in zip(self.lin, feats, strict=True)]
        return self.cls(self.fuse(torch.cat(ups[::-1], 1)))


def bisenetv2(num_classes: int = 19) -> nn.Module:
    from search_client.models.bisenetv2 import BiSeNetV2

    return BiSeNetV2(num_classes)


def rtseg_derived(num_classes: int = 19) -> nn.Module:
    """A compact dual-branch network of the kind the RTSeg search derives (fixed widths and paths)."""
    from search_client.models.twobranch import build_subnet

    spec = {
        "num_classes": num_classes,
        "detail": [{"cin": 3, "cout": 32, "stride": 2}, {"cin": 32, "cout": 32, "stride": 1},
                   {"cin": 32, "cout": 48, "stride": 2}, {"cin": 48, "cout": 48, "stride": 1},
                   {"cin": 48, "cout": 96, "stride": 2}],
        "stem": 16,
        "stages": [
            {"down": {"cin": 16, "cmid": 64, "cout": 32}, "blocks": [{"path": "lir", "cmid": 96}]},
            {"down": {"cin": 32, "cmid": 96, "cout": 64}, "blocks": [{"path": "lir", "cmid": 192}]},
            {"down": {"cin": 64, "cmid": 192, "cout": 96},
             "blocks": [{"path": "mhsa", "heads": 2, "patch": 1, "cmid": 192}, {"path": "lir", "cmid": 288}]},
        ],
        "head_mid": 128,
    }
    return build_subnet(spec)


# name -> (builder, two input sizes (H, W))
MODELS = {
    "mobilenet_v2": (mobilenet_v2, ((224, 224), (320, 320))),
    "mobilenet_v3_small": (mobilenet_v3_small, ((224, 224), (320, 320))),
    "resnet18": (resnet18, ((224, 224), (320, 320))),
    "shufflenet_v2": (shufflenet_v2, ((224, 224), (320, 320))),
    "efficientnet_b0": (efficientnet_b0, ((224, 224), (320, 320))),
    "bisenetv2": (bisenetv2, ((128, 256), (256, 512))),
    "segformer_b0": (SegFormerB0, ((256, 256), (256, 512))),
    "rtseg_derived": (rtseg_derived, ((128, 256), (256, 512))),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    module = MODELS[name][0]().eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    return module



