"""The kernel space a kernel campaign measures: shapes drawn around what CNNs and vision
transformers use, plus uniform coverage.

"Around real models" means generic network skeletons, not any named architecture: an input of
a usual size, a stage stride of 1 to 32, and channel widths that grow with the stride the way
mobile and residual networks grow them; transformer pieces at 1/4 to 1/32 resolution with 1 to 8
heads. The uniform share draws every dim log-uniformly over a wide range so that the predictor
has seen the corners too. Every draw is seeded; kernels too costly to measure quickly are drawn
again.
"""

from __future__ import annotations

import math
import random

from shared.kernels import KernelConfig, kernel_costs

INPUTS = ((224, 224), (256, 256), (192, 384), (256, 512), (320, 320), (384, 768), (160, 320), (512, 512))
STRIDES = (1, 2, 4, 8, 16, 32)
MAX_OPS = 1.5e9  # MACs or element operations per kernel
MAX_ELEMENTS = 24e6
KIND_WEIGHTS = {
    "conv": 0.24, "dwconv": 0.12, "matmul": 0.10, "binary": 0.07, "activation": 0.08, "concat": 0.04,
    "copy": 0.03, "resize": 0.05, "pool": 0.03, "global_pool": 0.03, "reduce": 0.02, "softmax": 0.03,
    "layernorm": 0.03, "transpose": 0.05, "reorder": 0.08,
}
CONV_ACTS_WEIGHTED = ("none", "none", "Relu", "Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu")
# HardSwish is no kernel of its own: onnxruntime (opset >= 14) runs it as HardSigmoid + Mul.
UNARY_WEIGHTED = ("Relu", "Clip", "Sigmoid", "Gelu", "BatchNormalization", "HardSigmoid",
                  "Tanh", "Erf", "Sqrt", "LeakyRelu", "PRelu", "QuickGelu", "QuickGelu")


def _log_uniform(rng: random.Random, lo: float, hi: float) -> int:
    return max(1, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))


def _round8(c: int, rng: random.Random) -> int:
    return c if rng.random() < 0.2 else max(8, int(round(c / 8)) * 8)


class _Shape:
    """One draw of a feature map: channels c at h x w (real-model-like or uniform)."""

    def __init__(self, rng: random.Random, uniform: bool) -> None:
        if uniform:
            self.h = _log_uniform(rng, 2, 256)
            self.w = self.h if rng.random() < 0.6 else _log_uniform(rng, 2, 512)
            self.c = _log_uniform(rng, 3, 1024)
        else:
            ih, iw = rng.choice(INPUTS)
            s = rng.choice(STRIDES[1:])
            self.h, self.w = max(1, ih // s), max(1, iw // s)
            base = rng.choice((8, 12, 16, 24, 32, 48, 64))
            self.c = _round8(int(base * s / 2 * rng.uniform(0.5, 2.0)), rng)
            self.c = min(max(self.c, 3), 1280)
        self.hw = self.h * self.w


def _draw(kind: str, rng: random.Random, uniform: bool, layout: bool) -> KernelConfig:
    f = _Shape(rng, uniform)
    c, h, w, hw = f.c, f.h, f.w, f.hw
    if kind == "conv":
        k = rng.choice((1, 1, 1, 3, 3, 3, 5, 7))
        stride = 2 if rng.random() < 0.2 else 1
        cin = rng.choice((3, 3)) if rng.random() < 0.06 else c
        cout = _round8(max(4, int(c * rng.choice((0.25, 0.5, 1, 1, 2, 4, 6)))), rng)
        residual = int(layout and stride == 1 and rng.random() < 0.2)  # Conv+Add fuses only in the NCHWc pass
        return KernelConfig(op="conv", fn=rng.choice(CONV_ACTS_WEIGHTED), dims=(cin, cout, h, w, k, stride, 1, residual))
    if kind == "dwconv":
        k = rng.choice((3, 3, 3, 5, 7))
        stride = 2 if rng.random() < 0.25 else 1
        return KernelConfig(op="dwconv", fn=rng.choice(CONV_ACTS_WEIGHTED), dims=(c, c, h, w, k, stride, c, 0))
    if kind == "matmul":
        tokens = max(1, hw // rng.choice((1, 4, 16)))
        if rng.random() < 0.35:  # attention: scores (tokens x dim x tokens) or context
            heads = rng.choice((1, 2, 4, 8))
            dim = rng.choice((16, 32, 64))
            kv = max(1, tokens // rng.choice((1, 4, 16, 64)))
            m, k, n = (tokens, dim, kv) if rng.random() < 0.5 else (tokens, kv, dim)
            return KernelConfig(op="matmul", fn="none", dims=(heads, m, k, n, 0))
        m = 1 if rng.random() < 0.1 else tokens
        k = c
        n = _round8(max(4, int(c * rng.choice((0.5, 1, 2, 4)))), rng)
        # onnxruntime fuses MatMul + Add into Gemm but no activation into either on the CPU
        return KernelConfig(op="matmul", fn="none", dims=(1, m, k, n, int(rng.random() < 0.7)))
    if kind == "binary":
        e = c * hw
        eb, trailing = rng.choice(((e, 0), (e, 0), (c, 0), (c, 1), (1, 0)))
        return KernelConfig(op="binary", fn=rng.choice(("Add", "Add", "Mul", "Mul", "Sub", "Div")), dims=(e, eb, trailing))
    if kind == "activation":
        return KernelConfig(op="activation", fn=rng.choice(UNARY_WEIGHTED), dims=(c, hw))
    if kind == "concat":
        n = rng.choice((2, 2, 3, 4))
        return KernelConfig(op="concat", fn="Concat", dims=(c * hw * n // 2, n))
    if kind == "copy":
        e = c * hw
        return KernelConfig(op="copy", fn="Slice", dims=(e, e // rng.choice((1, 2, 2, 4))))
    if kind == "resize":
        scale = rng.choice((2, 2, 4, 8))
        h0, w0 = max(1, h // scale), max(1, w // scale)
        # with the NCHWc pass, an upsample after a conv runs as its NCHWc Upsample (channels in blocks of 8)
        fns = ("nchwc-nearest", "nchwc-linear", "nchwc-linear", "linear") if layout and c % 8 == 0 else \
            ("nearest", "linear", "linear")
        return KernelConfig(op="resize", fn=rng.choice(fns), dims=(c, h0, w0, h0 * scale, w0 * scale))
    if kind == "pool":
        k, s = rng.choice(((3, 2), (2, 2), (3, 1), (5, 1)))
        return KernelConfig(op="pool", fn=rng.choice(("MaxPool", "MaxPool", "AveragePool")), dims=(c, h, w, k, s))
    if kind == "global_pool":
        return KernelConfig(op="global_pool", fn=rng.choice(("GlobalAveragePool", "GlobalAveragePool", "GlobalMaxPool")), dims=(c, hw))
    if kind == "reduce":
        return KernelConfig(op="reduce", fn=rng.choice(("ReduceMean", "ReduceMean", "ReduceSum")), dims=(c, hw))
    if kind == "softmax":
        tokens = max(1, hw // rng.choice((1, 4, 16)))
        kv = max(1, tokens // rng.choice((1, 4, 16, 64)))
        return KernelConfig(op="softmax", fn="Softmax", dims=(rng.choice((1, 2, 4, 8)) * tokens, kv))
    if kind == "layernorm":
        return KernelConfig(op="layernorm", fn="LayerNormalization", dims=(max(1, hw // rng.choice((1, 4))), c, 0))
    if kind == "transpose":
        form = rng.random()
        if form < 0.4:  # NCHW <-> tokens
            return KernelConfig(op="transpose", fn="Transpose", dims=(c, hw, 1))
        if form < 0.7:  # channel shuffle
            g = rng.choice((2, 4))
            return KernelConfig(op="transpose", fn="Transpose", dims=(g, max(1, c // g), hw))
        heads = rng.choice((1, 2, 4, 8))
        return KernelConfig(op="transpose", fn="Transpose", dims=(heads, max(1, hw // rng.choice((1, 4))), rng.choice((16, 32, 64))))
    if kind == "reorder":
        cb = int(math.ceil(c / 16) * 16)  # a multiple of the block size on AVX2 (8) and AVX-512 (16) alike
        return KernelConfig(op="reorder", fn=rng.choice(("ReorderInput", "ReorderOutput")), dims=(cb, hw, cb))
    return KernelConfig(op="overhead")


def _cheap(cfg: KernelConfig) -> bool:
    ops, inp, out, weights = kernel_costs(cfg)
    return ops <= MAX_OPS and max(inp, out) <= MAX_ELEMENTS and weights <= 16e6


def sample_kernels(n: int, seed: int = 0, uniform_share: float = 0.3, reorders: bool = True) -> list[KernelConfig]:
    """``n`` distinct kernel configs (one of them the ``overhead`` kernel), kinds by KIND_WEIGHTS.
    ``reorders``: the device runs onnxruntime's NCHWc layout pass (an x86 host): include its
    conversions and the convolutions with a fused residual Add that only that pass produces."""
    rng = random.Random(seed)
    weights = {k: v for k, v in KIND_WEIGHTS.items() if reorders or k != "reorder"}
    kinds, shares = list(weights), list(weights.values())
    out = {KernelConfig(op="overhead").key(): KernelConfig(op="overhead")}
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        cfg = _draw(rng.choices(kinds, shares)[0], rng, rng.random() < uniform_share, reorders)
        if _cheap(cfg):
            out.setdefault(cfg.key(), cfg)
    configs = list(out.values())
    rng.shuffle(configs)
    return configs
