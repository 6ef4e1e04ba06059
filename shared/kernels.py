"""Kernels: the units a runtime actually executes, after its graph fusions.

An ONNX model is split into kernels the way onnxruntime runs it: the model is optimized by
onnxruntime itself at the *extended* level (the fusions every CPU build applies; the hardware-only
NCHWc layout pass of the *all* level is left out so the kernel list is the same on x86 and ARM),
and every node of the optimized graph becomes one :class:`KernelConfig` with the shape features
that decide its cost. Tensor shapes come from onnx shape inference of the input model, completed by
running the optimized graph once (onnx does not know onnxruntime's fused ops).

Fusions onnxruntime applies and this decomposition therefore sees (kernel kind in brackets):
  * Conv + BatchNormalization (+ Add of a constant) + Relu/Clip/Sigmoid/Tanh/LeakyRelu/HardSigmoid
    -> FusedConv [conv, or dwconv when every group has one input channel];
  * MatMul + Add (2-D) -> Gemm, Gemm + activation -> FusedGemm, MatMul + Transpose/scale ->
    FusedMatMul [matmul];
  * the Erf form of GELU -> Gelu / BiasGelu [activation];
  * the ReduceMean/Sub/Pow/Sqrt/Div chain -> LayerNormalization [layernorm];
  * HardSwish stays a separate kernel [activation]; residual Adds stay separate [binary].
TFLite (XNNPACK and the builtin kernels on phones) differs: it fuses Relu/Relu6 into Conv,
DepthwiseConv, FullyConnected and also into Add/Mul (onnxruntime does not fuse activations into
Add); it fuses no Sigmoid/HardSigmoid into a convolution; HardSwish is one kernel as here;
LayerNorm and GELU are kept as their primitive ops unless the converter pattern-matches them; a
Transpose in front of a MatMul is folded into FullyConnected/BatchMatMul's adjoint flag; NCHW
models become NHWC so the layout Transposes of a converted PyTorch model disappear. The kernel
kinds are the same; only the grouping of a few ops differs.

Ops with no cost of their own (shape arithmetic, Reshape and friends) are listed as ``free``;
ops that no kernel kind covers are listed as ``unsupported`` — never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from shared.config import CONFIG_CLASSES, kind_required_on_wire
from shared.schemas import KERNEL_HELPER_PREFIX

KERNEL_OPSET = 17
NCHWC = "com.microsoft.nchwc"  # onnxruntime's blocked-layout ops (level "all" on x86)
LEVELS = ("extended", "all")
MAX_DIM = 1 << 30

# Kernel kind -> the names of its integer dims (in order). ``fn`` refines the kind (activation,
# pooling type, binary op, resize mode); it is a feature too.
KERNEL_DIMS: dict[str, tuple[str, ...]] = {
    "conv": ("cin", "cout", "h", "w", "kernel", "stride", "groups", "residual"),
    "dwconv": ("cin", "cout", "h", "w", "kernel", "stride", "groups", "residual"),
    "matmul": ("batch", "m", "k", "n", "bias"),
    "binary": ("elements", "elements_b", "trailing"),
    "activation": ("c", "hw"),
    "concat": ("elements", "inputs"),
    "copy": ("elements_in", "elements_out"),
    "resize": ("c", "h", "w", "oh", "ow"),
    "pool": ("c", "h", "w", "kernel", "stride"),
    "global_pool": ("c", "hw"),
    "reduce": ("rows", "cols"),
    "softmax": ("rows", "cols"),
    "layernorm": ("rows", "cols", "skip"),
    "transpose": ("a", "b", "c"),
    "reorder": ("c", "hw", "cb"),
    "overhead": (),
}
KERNEL_KINDS: tuple[str, ...] = tuple(KERNEL_DIMS)

CONV_ACTS = ("none", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid")
UNARY_FNS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Gelu",
             "BiasGelu", "FastGelu", "Erf", "Sqrt", "Exp", "Neg", "Abs", "Softplus", "Elu",
             "BatchNormalization", "PRelu", "QuickGelu")
BINARY_FNS = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
POOL_FNS = ("MaxPool", "AveragePool")
GLOBAL_POOL_FNS = ("GlobalAveragePool", "GlobalMaxPool")
REDUCE_FNS = ("ReduceMean", "ReduceSum", "ReduceMax")
# ``nchwc-*``: the Upsample onnxruntime runs in its NCHWc layout when the input comes from a kernel in
# that layout (x86 hosts); a lone Resize runs the plain kernel (2-3x slower on the same shape).
RESIZE_FNS = ("nearest", "linear", "cubic", "nchwc-nearest", "nchwc-linear")
COPY_FNS = ("Slice", "Split", "Pad", "Expand", "Tile", "Gather")
FNS: dict[str, tuple[str, ...]] = {
    "conv": CONV_ACTS, "dwconv": CONV_ACTS, "matmul": CONV_ACTS + ("Gelu",), "binary": BINARY_FNS,
    "activation": UNARY_FNS, "concat": ("Concat",), "copy": COPY_FNS, "resize": RESIZE_FNS,
    "pool": POOL_FNS, "global_pool": GLOBAL_POOL_FNS, "reduce": REDUCE_FNS, "softmax": ("Softmax",),
    "layernorm": ("LayerNormalization",), "transpose": ("Transpose",),
    "reorder": ("ReorderInput", "ReorderOutput"), "overhead": ("none",),
}

FREE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape",
                      "Constant", "ConstantOfShape", "Size", "Range", "NonZero", "Cast"})


class KernelConfig(BaseModel):
    """One kernel: a kind, its sub-type ``fn`` and its integer dims (names in ``KERNEL_DIMS``)."""

    # ``kind`` defaults for Python callers; on the wire it is the campaign union's tag: required.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=kind_required_on_wire)
    kind: Literal["kernel"] = "kernel"
    op: Literal[tuple(KERNEL_KINDS)]  # type: ignore[valid-type]
    fn: str = Field("none", max_length=40)
    dims: tuple[int, ...] = Field(default=(), max_length=16)

    @model_validator(mode="after")
    def _dims_match(self) -> KernelConfig:
        names = KERNEL_DIMS[self.op]
        if len(self.dims) != len(names):
            raise ValueError(f"{self.op} takes dims {names}, got {len(self.dims)} values")
        if any(d < 0 or d > MAX_DIM for d in self.dims):
            raise ValueError(f"dims must lie in [0, {MAX_DIM}], got {self.dims}")
        if self.fn not in FNS[self.op]:
            raise ValueError(f"{self.op} fn must be one of {FNS[self.op]}, got {self.fn!r}")
        return self

    @property
    def values(self) -> dict[str, int]:
        return dict(zip(KERNEL_DIMS[self.op], self.dims, strict=True))

    def key(self) -> str:
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        v = ",".join(f"{n}={d}" for n, d in self.values.items())
        return f"{self.op}[{self.fn}]({v})"


# Campaign configs: a block of the search space or a kernel ("kernels are just another block family").
def _campaign_union():  # noqa: ANN202
    classes = (*CONFIG_CLASSES.values(), KernelConfig)
    union = classes[0]
    for cls in classes[1:]:
        union = union | cls
    return Annotated[union, Field(discriminator="kind")]


CampaignConfig = _campaign_union()  # type: ignore[misc]
_CAMPAIGN_LIST = TypeAdapter(list[CampaignConfig])


def parse_campaign_configs(data: list) -> list:
    """Block configs and kernel configs from JSON (pydantic.ValidationError when invalid)."""
    return _CAMPAIGN_LIST.validate_python(data)


# --- cost features ------------------------------------------------------------------------------

def _out_hw(h: int, w: int, stride: int) -> int:
    return math.ceil(h / max(stride, 1)) * math.ceil(w / max(stride, 1))


def kernel_costs(cfg: KernelConfig) -> tuple[float, float, float, float]:
    """(MACs or element operations, input elements, output elements, weight elements)."""
    v = cfg.values
    op = cfg.op
    if op in ("conv", "dwconv"):
        hw = _out_hw(v["h"], v["w"], v["stride"])
        weights = v["cout"] * (v["cin"] // max(v["groups"], 1)) * v["kernel"] ** 2
        inputs = v["cin"] * v["h"] * v["w"] + v["residual"] * hw * v["cout"]
        return float(hw * weights), float(inputs), float(hw * v["cout"]), float(weights)
    if op == "matmul":
        b, m, k, n = v["batch"], v["m"], v["k"], v["n"]
        return float(b * m * k * n), float(b * m * k), float(b * m * n), float(k * n)
    if op == "binary":
        return float(v["elements"]), float(v["elements"] + v["elements_b"]), float(v["elements"]), 0.0
    if op == "activation":
        e = v["c"] * v["hw"]
        return float(e), float(e), float(e), 0.0
    if op == "concat":
        return float(v["elements"]), float(v["elements"]), float(v["elements"]), 0.0
    if op == "copy":
        return float(v["elements_out"]), float(v["elements_in"]), float(v["elements_out"]), 0.0
    if op == "resize":
        out = v["c"] * v["oh"] * v["ow"]
        return float(out), float(v["c"] * v["h"] * v["w"]), float(out), 0.0
    if op == "pool":
        out = v["c"] * _out_hw(v["h"], v["w"], v["stride"])
        return float(out * v["kernel"] ** 2), float(v["c"] * v["h"] * v["w"]), float(out), 0.0
    if op == "global_pool":
        return float(v["c"] * v["hw"]), float(v["c"] * v["hw"]), float(v["c"]), 0.0
    if op in ("reduce", "softmax", "layernorm"):
        e = v["rows"] * v["cols"]
        out = v["rows"] if op == "reduce" else e
        return float(e), float(e * (2 if v.get("skip") else 1)), float(out), 0.0
    if op == "transpose":
        e = v["a"] * v["b"] * v["c"]
        return float(e), float(e), float(e), 0.0
    if op == "reorder":
        return float(v["cb"] * v["hw"]), float(v["c"] * v["hw"]), float(v["cb"] * v["hw"]), 0.0
    return 0.0, 0.0, 0.0, 0.0


FEATURE_NAMES: tuple[str, ...] = ("ops", "in_elems", "out_elems", "weights", "fn",
                                  *[f"d{i}" for i in range(8)], "blocked")


@lru_cache(maxsize=1)
def nchwc_block_size() -> int:
    """Channels per block of onnxruntime's NCHWc layout on this CPU (8 with AVX2, 16 with AVX-512),
    read from how it lays out a one-pool model; 0 when it has no NCHWc pass."""
    for block in (8, 16):
        cfg = KernelConfig(op="pool", fn="MaxPool", dims=(block, 4, 4, 2, 2))
        if any(n.domain == NCHWC for n in optimize_with_onnxruntime(kernel_graph(cfg), "all").graph.node):
            return block
    return 0


def runs_blocked(cfg: KernelConfig) -> bool:
    """Whether onnxruntime's NCHWc pass (x86) runs this kernel in its blocked layout, by the pass's
    channel rules: a convolution whose input channels are fewer than a block or a multiple of 4, a
    depthwise one whose channels are a multiple of 4, pooling over whole blocks. A kernel off the
    blocked path runs a plain kernel, e.g. a depthwise 3x3 on 42 channels 4x slower than on 40."""
    block, v = nchwc_block_size(), cfg.values
    if not block:
        return False
    if cfg.op == "conv":
        return v["cin"] < block or v["cin"] % 4 == 0
    if cfg.op == "dwconv":
        return v["cin"] % 4 == 0
    if cfg.op in ("pool", "global_pool"):
        return v["c"] % block == 0
    return cfg.op == "resize" and cfg.fn.startswith("nchwc-")


def kernel_features(cfg: KernelConfig) -> list[float]:
    """log2(1 + x) of the costs and of every dim (padded to 8), the index of ``fn`` and whether it
    runs in the NCHWc blocked layout."""
    costs = [math.log2(1 + c) for c in kernel_costs(cfg)]
    dims = [math.log2(1 + d) for d in cfg.dims][:8]
    return costs + [float(FNS[cfg.op].index(cfg.fn))] + dims + [0.0] * (8 - len(dims)) + [float(runs_blocked(cfg))]


def linear_terms(cfg: KernelConfig) -> list[float]:
    """Terms a kernel's time is roughly linear in: compute, memory traffic, a constant."""
    ops, inp, out, wts = kernel_costs(cfg)
    return [ops, inp + out + wts, 1.0]


# --- one-kernel ONNX models ---------------------------------------------------------------------

def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _const(name: str, shape: Sequence[int], rng: np.random.Generator, scale: float = 0.1) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _act_nodes(fn: str, x: str, y: str) -> list[onnx.NodeProto]:
    if fn == "none":
        return [helper.make_node("Identity", [x], [y])]
    if fn == "Clip":
        return [helper.make_node("Clip", [x, "clip_lo", "clip_hi"], [y])]
    if fn == "Gelu":  # the Erf form onnxruntime fuses into Gelu
        return [helper.make_node("Div", [x, "sqrt2"], ["g0"]), helper.make_node("Erf", ["g0"], ["g1"]),
                helper.make_node("Add", ["g1", "one"], ["g2"]), helper.make_node("Mul", [x, "g2"], ["g3"]),
                helper.make_node("Mul", ["g3", "half"], [y])]
    return [helper.make_node(fn, [x], [y])]


def _scalars() -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("clip_lo", 0.0), ("clip_hi", 6.0), ("sqrt2", math.sqrt(2)), ("one", 1.0), ("half", 0.5))]


def kernel_graph(cfg: KernelConfig) -> onnx.ModelProto:
    """A model whose optimized graph is exactly this one kernel (plus free ops), seeded by its key."""
    rng = np.random.default_rng(int(cfg.key(), 16) % (2**32))
    v, op, fn = cfg.values, cfg.op, cfg.fn
    nodes: list[onnx.NodeProto] = []
    inits = _scalars()
    inputs: list[onnx.ValueInfoProto] = []
    if op in ("conv", "dwconv"):
        k, s, g = v["kernel"], v["stride"], max(v["groups"], 1)
        inputs.append(_f32("input", [1, v["cin"], v["h"], v["w"]]))
        inits += [_const("W", [v["cout"], v["cin"] // g, k, k], rng), _const("B", [v["cout"]], rng)]
        nodes.append(helper.make_node("Conv", ["input", "W", "B"], ["conv"], kernel_shape=[k, k], strides=[s, s],
                                      pads=[k // 2] * 4, group=g))
        last = "conv"
        if v["residual"]:
            oh, ow = math.ceil(v["h"] / s), math.ceil(v["w"] / s)
            inputs.append(_f32("skip", [1, v["cout"], oh, ow]))
            nodes.append(helper.make_node("Add", ["conv", "skip"], ["sum"]))
            last = "sum"
        nodes += _act_nodes(fn, last, "output")
    elif op == "matmul":
        b, m, kk, n = v["batch"], v["m"], v["k"], v["n"]
        if b > 1:  # batched: both operands are activations (attention scores and context)
            inputs += [_f32("input", [b, m, kk]), _f32("input1", [b, kk, n])]
            nodes.append(helper.make_node("MatMul", ["input", "input1"], ["mm"]))
        else:
            inputs.append(_f32("input", [m, kk]))
            inits.append(_const("W", [kk, n], rng))
            nodes.append(helper.make_node("MatMul", ["input", "W"], ["mm"]))
        last = "mm"
        if v["bias"]:
            inits.append(_const("B", [n], rng))
            nodes.append(helper.make_node("Add", ["mm", "B"], ["mmb"]))
            last = "mmb"
        nodes += _act_nodes(fn, last, "output")
    elif op == "binary":
        e, eb = v["elements"], max(v["elements_b"], 1)
        outer = e // eb
        a_shape = [outer, eb] if v["trailing"] else [eb, outer]
        b_shape = [1, eb] if v["trailing"] else [eb, 1]
        if eb == e:
            a_shape = b_shape = [e]
        inputs += [_f32("input", a_shape), _f32("input1", b_shape)]
        nodes.append(helper.make_node(fn, ["input", "input1"], ["output"]))
    elif op == "activation":
        shape = [1, v["c"], v["hw"]]
        inputs.append(_f32("input", shape))
        if fn == "BatchNormalization":
            c = v["c"]
            inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), n) for n in ("bs", "bb", "bm", "bv")]
            nodes.append(helper.make_node("BatchNormalization", ["input", "bs", "bb", "bm", "bv"], ["output"]))
        elif fn == "PRelu":
            inits.append(_const("slope", [v["c"], 1], rng))
            nodes.append(helper.make_node("PRelu", ["input", "slope"], ["output"]))
        elif fn in ("BiasGelu", "FastGelu"):
            nodes += _act_nodes("Gelu", "input", "output")
        elif fn == "QuickGelu":  # x * sigmoid(x) (SiLU / Swish), which onnxruntime fuses into QuickGelu
            nodes += [helper.make_node("Sigmoid", ["input"], ["sg"]), helper.make_node("Mul", ["input", "sg"], ["output"])]
        else:
            nodes += _act_nodes(fn, "input", "output")
    elif op == "concat":
        n_in = max(v["inputs"], 1)
        part = max(v["elements"] // n_in, 1)
        for i in range(n_in):
            inputs.append(_f32(f"input{i}" if i else "input", [1, part]))
        nodes.append(helper.make_node("Concat", [i.name for i in inputs], ["output"], axis=1))
    elif op == "copy":
        e_in, e_out = v["elements_in"], min(v["elements_out"], v["elements_in"])
        inputs.append(_f32("input", [e_in]))
        inits += [numpy_helper.from_array(np.array([0], np.int64), "st"),
                  numpy_helper.from_array(np.array([max(e_out, 1)], np.int64), "en")]
        nodes.append(helper.make_node("Slice", ["input", "st", "en"], ["output"]))
    elif op == "resize" and fn.startswith("nchwc-"):
        # a 1x1 depthwise helper puts the input in the NCHWc layout, so onnxruntime runs its NCHWc
        # Upsample as inside a whole model; profiling runners leave the helper out (its name says so)
        c, mode = v["c"], fn.removeprefix("nchwc-")
        inputs.append(_f32("input", [1, c, v["h"], v["w"]]))
        inits += [_const(f"{KERNEL_HELPER_PREFIX}w", [c, 1, 1, 1], rng),
                  numpy_helper.from_array(np.array([1, 1, v["oh"] / max(v["h"], 1), v["ow"] / max(v["w"], 1)],
                                                   np.float32), "scales")]
        nodes.append(helper.make_node("Conv", ["input", f"{KERNEL_HELPER_PREFIX}w"], [f"{KERNEL_HELPER_PREFIX}x"],
                                      name=f"{KERNEL_HELPER_PREFIX}conv", group=c, kernel_shape=[1, 1]))
        attrs = {"coordinate_transformation_mode": "half_pixel"} if mode == "linear" else \
            {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        nodes.append(helper.make_node("Resize", [f"{KERNEL_HELPER_PREFIX}x", "", "scales"], ["output"], mode=mode, **attrs))
    elif op == "resize":
        inputs.append(_f32("input", [1, v["c"], v["h"], v["w"]]))
        inits.append(numpy_helper.from_array(np.array([1, v["c"], v["oh"], v["ow"]], np.int64), "sizes"))
        attrs = {"mode": fn}
        if fn != "nearest":
            attrs["coordinate_transformation_mode"] = "half_pixel"
        nodes.append(helper.make_node("Resize", ["input", "", "", "sizes"], ["output"], **attrs))
    elif op == "pool":
        k, s = v["kernel"], v["stride"]
        inputs.append(_f32("input", [1, v["c"], v["h"], v["w"]]))
        nodes.append(helper.make_node(fn, ["input"], ["output"], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4))
    elif op == "global_pool":
        inputs.append(_f32("input", [1, v["c"], v["hw"], 1]))
        nodes.append(helper.make_node(fn, ["input"], ["output"]))
    elif op == "reduce":
        inputs.append(_f32("input", [v["rows"], v["cols"]]))
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
        nodes.append(helper.make_node(fn, ["input", "axes"] if fn == "ReduceSum" else ["input"], ["output"],
                                      **({} if fn == "ReduceSum" else {"axes": [1]})))
    elif op == "softmax":
        inputs.append(_f32("input", [v["rows"], v["cols"]]))
        nodes.append(helper.make_node("Softmax", ["input"], ["output"], axis=-1))
    elif op == "layernorm":
        inputs.append(_f32("input", [v["rows"], v["cols"]]))
        inits += [_const("gamma", [v["cols"]], rng), _const("beta", [v["cols"]], rng)]
        src = "input"
        if v["skip"]:
            inputs.append(_f32("input1", [v["rows"], v["cols"]]))
            nodes.append(helper.make_node("Add", ["input", "input1"], ["sk"]))
            src = "sk"
        nodes.append(helper.make_node("LayerNormalization", [src, "gamma", "beta"], ["output"], axis=-1))
    elif op == "transpose":
        inputs.append(_f32("input", [v["a"], v["b"], v["c"]]))
        nodes.append(helper.make_node("Transpose", ["input"], ["output"], perm=[1, 0, 2]))
    elif op == "reorder":  # onnxruntime's NCHWc layout conversions (x86 CPUs with AVX2 or better)
        if fn == "ReorderInput":
            inputs.append(_f32("input", [1, v["c"], v["hw"], 1]))
            nodes.append(helper.make_node(fn, ["input"], ["output"], domain=NCHWC, channels_last=0))
        else:
            inputs.append(_f32("input", [1, v["cb"], v["hw"], 1]))
            nodes.append(helper.make_node(fn, ["input"], ["output"], domain=NCHWC, channels=v["c"], channels_last=0))
    else:  # overhead: the cost of one inference call with (almost) nothing in it
        inputs.append(_f32("input", [1]))
        nodes.append(helper.make_node("Relu", ["input"], ["output"]))
    used = {i for n in nodes for i in n.input}
    inits = [t for t in inits if t.name in used]
    graph = helper.make_graph(nodes, f"kernel_{op}", inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
                              initializer=inits)
    opsets = [helper.make_opsetid("", KERNEL_OPSET)] + ([helper.make_opsetid(NCHWC, 1)] if op == "reorder" else [])
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="rtseg-kernels")
    model.ir_version = 8
    return model


def export_kernel_onnx(cfg: KernelConfig) -> bytes:
    return kernel_graph(cfg).SerializeToString()


def export_config(cfg, fmt: str = "onnx") -> bytes:  # noqa: ANN001 - block or kernel config
    """Artifact bytes of a campaign config: blocks through ``shared.export``, kernels built here."""
    if isinstance(cfg, KernelConfig):
        if fmt != "onnx":
            raise ValueError("kernel configs are measured as ONNX models only (onnxruntime runtimes)")
        return export_kernel_onnx(cfg)
    from shared.export import export_block

    return export_block(cfg, fmt)


# --- decomposition ------------------------------------------------------------------------------

class DecompositionError(ValueError):
    """The model cannot be decomposed; the message says why and what to do."""


@dataclass
class Kernel:
    """One kernel of a decomposed model: the graph nodes it covers and its config."""

    nodes: list[str]  # the user's nodes it stands for
    op_types: list[str]  # their op types
    config: KernelConfig
    runtime_op: str = ""  # what onnxruntime runs (FusedConv, Gemm, ...)


@dataclass
class Decomposition:
    kernels: list[Kernel] = field(default_factory=list)
    free: list[dict] = field(default_factory=list)  # {"node", "op_type"}: no cost of its own
    unsupported: list[dict] = field(default_factory=list)  # {"node", "op_type", "reason"}
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kernels:
            out[k.config.op] = out.get(k.config.op, 0) + 1
        return out


def parse_input_shape(text: str) -> list[int]:
    """``1x3x512x1024`` -> [1, 3, 512, 1024]; ValueError with a message."""
    try:
        dims = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError as exc:
        raise ValueError(f"input shape {text!r} must look like 1x3x512x1024") from exc
    if not dims or any(d < 1 or d > 65536 for d in dims):
        raise ValueError(f"input shape {text!r}: every dim must be between 1 and 65536")
    return dims


def _dims_of(vi: onnx.ValueInfoProto) -> list[int | None]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def _fix_inputs(model: onnx.ModelProto, input_shape: list[int] | None) -> dict[str, list[int]]:
    inits = {i.name for i in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in inits]
    if not real:
        raise DecompositionError("the model has no inputs")
    shapes: dict[str, list[int]] = {}
    for idx, vi in enumerate(real):
        dims = _dims_of(vi)
        if idx == 0 and input_shape is not None:
            if dims and len(dims) != len(input_shape):
                raise DecompositionError(
                    f"input {vi.name!r} has rank {len(dims)}, the given input shape has rank {len(input_shape)}")
            dims = list(input_shape)
            del vi.type.tensor_type.shape.dim[:]
            for d in dims:
                vi.type.tensor_type.shape.dim.add().dim_value = d
        if not dims or any(d is None for d in dims):
            raise DecompositionError(
                f"input {vi.name!r} has dynamic shape {dims or '(unknown)'}: give the input size "
                f"(e.g. 1x3x512x1024)" + (" for the first input; other inputs must be static" if idx else ""))
        shapes[vi.name] = [int(d) for d in dims]
    return shapes


def optimize_with_onnxruntime(model: onnx.ModelProto, level: str = "extended") -> onnx.ModelProto:
    """onnxruntime's own optimized graph: ``extended`` (every CPU build) or ``all`` (adds the NCHWc
    blocked layout on x86 CPUs: what the host runs by default)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "opt.onnx")
        onnx.save(model, src)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        opts.optimized_model_filepath = dst
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own non-exported types
            raise DecompositionError(f"onnxruntime cannot load the model: {str(exc)[:400]}") from exc
        return onnx.load(dst)


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
              "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def tensor_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Shape of every tensor of ``model``: onnx shape inference first; the tensors it cannot type
    (outputs of onnxruntime's fused ops) from one run of the graph with every tensor exposed."""
    shapes: dict[str, list[int]] = {n: list(s) for n, s in input_shapes.items()}
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        for vi in [*inferred.graph.value_info, *inferred.graph.output]:
            dims = _dims_of(vi)
            if dims and all(d is not None for d in dims):
                shapes[vi.name] = [int(d) for d in dims]
    except Exception:  # onnx gives up on unknown domains; the run below fills in  # noqa: BLE001
        pass
    wanted = [o for n in model.graph.node for o in n.output if o and o not in shapes]
    if wanted:
        shapes.update(_run_for_shapes(model, input_shapes, wanted))
    return shapes


def _run_for_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]], names: list[str]) -> dict:
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in have:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {}
        for i in sess.get_inputs():
            dtype = _ORT_TYPES.get(i.type, np.float32)
            shape = input_shapes[i.name]
            feeds[i.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                             else np.zeros(shape, dtype))
        out_names = [o.name for o in sess.get_outputs()]
        values = sess.run(out_names, feeds)
    except Exception as exc:  # noqa: BLE001 - any failure here means the shape does not fit the model
        raise DecompositionError(f"the model does not run at input shape {input_shapes}: {str(exc)[:400]}") from exc
    return {n: list(np.shape(v)) for n, v in zip(out_names, values, strict=True)}


def _attr(node: onnx.NodeProto, name: str, default=None):  # noqa: ANN001, ANN202
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _prod(xs: Sequence[int]) -> int:
    return int(math.prod(xs)) if xs else 1


def _is_float(name: str, dtypes: dict[str, int]) -> bool:
    return dtypes.get(name, TensorProto.FLOAT) in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


def _conv_kernel(node: onnx.NodeProto, s: dict) -> KernelConfig:
    x, w = s[node.input[0]], s[node.input[1]]
    out = s[node.output[0]]
    groups = int(_attr(node, "group", 1))
    kshape = _attr(node, "kernel_shape", None) or w[2:]
    strides = _attr(node, "strides", None) or [1] * (len(x) - 2)
    cin, cout = x[1], out[1]
    h = x[2] if len(x) > 2 else 1
    ww = x[3] if len(x) > 3 else 1
    k = int(max(kshape)) if kshape else 1
    stride = int(max(strides)) if strides else 1
    residual = int(len(node.input) > 3 and bool(node.input[3]))
    act = _attr(node, "activation", b"none")
    act = act.decode() if isinstance(act, bytes) else (act or "none")
    if act not in CONV_ACTS:
        act = "none"
    op = "dwconv" if groups > 1 and w[1] == 1 else "conv"
    return KernelConfig(op=op, fn=act, dims=(cin, cout, h, ww, k, stride, groups, residual))


def _matmul_kernel(node: onnx.NodeProto, s: dict) -> KernelConfig:
    a, b, out = s[node.input[0]], s[node.input[1]], s[node.output[0]]
    ta = int(_attr(node, "transA", 0))
    k = a[-2] if ta else a[-1]
    n = out[-1]
    m = out[-2] if len(out) >= 2 else 1
    batch_b = _prod(b[:-2]) if len(b) > 2 else 1
    rows = _prod(out[:-1])
    if batch_b > 1:  # activation x activation (attention): batched
        batch, m = _prod(out[:-2]), out[-2]
    else:  # weights on the right: all leading dims are rows of one GEMM
        batch, m = 1, rows
    bias = int(node.op_type in ("Gemm", "FusedGemm") and len(node.input) > 2 and bool(node.input[2]))
    act = _attr(node, "activation", b"none")
    act = act.decode() if isinstance(act, bytes) else (act or "none")
    return KernelConfig(op="matmul", fn=act if act in FNS["matmul"] else "none", dims=(batch, m, k, n, bias))


def _binary_kernel(node: onnx.NodeProto, s: dict) -> KernelConfig:
    out = s[node.output[0]]
    e = _prod(out)
    sizes = [(_prod(s[i]), s[i]) for i in node.input if i in s]
    smaller = min(sizes, key=lambda t: t[0]) if sizes else (e, out)
    eb, bshape = smaller
    trailing = 0
    if 1 < eb < e:
        nontrivial = [i for i, d in enumerate(bshape) if d > 1]
        rank_gap = len(out) - len(bshape)
        trailing = int(bool(nontrivial) and nontrivial[-1] + rank_gap == len(out) - 1)
    return KernelConfig(op="binary", fn=node.op_type, dims=(e, eb, trailing))


def _two_d(shape: Sequence[int], axis: int) -> tuple[int, int]:
    axis = axis % len(shape) if shape else 0
    return _prod(shape[:axis]), _prod(shape[axis:])


def _classify(node: onnx.NodeProto, s: dict, dtypes: dict) -> KernelConfig | str:
    """The node's kernel config, ``"free"``, or the reason it is unsupported."""
    op = node.op_type
    outs = [o for o in node.output if o]
    if node.domain == NCHWC and op in ("ReorderInput", "ReorderOutput"):
        if op == "ReorderInput":
            src, dst = s.get(node.input[0]), s.get(outs[0])
        else:
            dst, src = s.get(node.input[0]), s.get(outs[0])
        if src is None or dst is None or len(src) < 2:
            return "shape unknown"
        return KernelConfig(op="reorder", fn=op, dims=(src[1], _prod(src[2:]), dst[1]))
    if node.domain == NCHWC and op == "Upsample":
        x, y = s[node.input[0]], s[outs[0]]
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return KernelConfig(op="resize", fn=f"nchwc-{mode}" if mode in ("nearest", "linear") else "linear",
                            dims=(x[1], x[2], x[3], y[2], y[3]))
    if op in FREE_OPS:
        return "free"
    if outs and all(not _is_float(o, dtypes) for o in outs) and all(_prod(s.get(o, [1])) <= 64 for o in outs):
        return "free"  # integer shape arithmetic
    missing = [t for t in [*node.input[:1], *outs[:1]] if t and t not in s]
    if missing:
        return f"shape of {missing[0]!r} unknown"
    x, y = s[node.input[0]], s[outs[0]]
    if op in ("Conv", "FusedConv"):
        if len(x) != 4:
            return f"{len(x) - 2}-D convolution (only 2-D has a kernel kind)"
        return _conv_kernel(node, s)
    if op in ("MatMul", "Gemm", "FusedGemm", "FusedMatMul"):
        if len(node.input) > 1 and node.input[1] in s:
            return _matmul_kernel(node, s)
        return "operand shape unknown"
    if op in BINARY_FNS:
        return _binary_kernel(node, s)
    if op in UNARY_FNS:
        c = x[1] if len(x) >= 2 else 1
        return KernelConfig(op="activation", fn=op, dims=(c, _prod(x) // max(c, 1)))
    if op == "Concat":
        return KernelConfig(op="concat", fn="Concat", dims=(_prod(y), len([i for i in node.input if i])))
    if op in COPY_FNS:
        return KernelConfig(op="copy", fn=op, dims=(_prod(x), sum(_prod(s.get(o, [0])) for o in outs)))
    if op in ("Resize", "Upsample"):
        if len(x) != 4:
            return "Resize of a non-4-D tensor"
        mode = _attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return KernelConfig(op="resize", fn=mode if mode in RESIZE_FNS else "linear", dims=(x[1], x[2], x[3], y[2], y[3]))
    if op in POOL_FNS:
        k = int(max(_attr(node, "kernel_shape", [1])))
        st = int(max(_attr(node, "strides", None) or [1]))
        return KernelConfig(op="pool", fn=op, dims=(x[1], x[2], x[3] if len(x) > 3 else 1, k, st))
    if op in GLOBAL_POOL_FNS:
        return KernelConfig(op="global_pool", fn=op, dims=(x[1], _prod(x[2:])))
    if op in REDUCE_FNS:
        return KernelConfig(op="reduce", fn=op, dims=(_prod(y), _prod(x) // max(_prod(y), 1)))
    if op == "Softmax":
        rows, cols = _two_d(x, int(_attr(node, "axis", -1)))
        return KernelConfig(op="softmax", fn="Softmax", dims=(rows, cols))
    if op in ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"):
        axis = int(_attr(node, "axis", -1))
        rows, cols = _two_d(x, axis)
        return KernelConfig(op="layernorm", fn="LayerNormalization",
                            dims=(rows, cols, int(op == "SkipLayerNormalization")))
    if op == "Transpose":
        perm = list(_attr(node, "perm", list(range(len(x)))[::-1]))
        inner = 1
        for axis in range(len(x) - 1, -1, -1):  # trailing axes that stay in place are copied as blocks
            if perm and perm[-1] == axis and perm[: len(perm) - 1] != list(range(len(perm) - 1)):
                inner *= x[axis]
                perm = perm[:-1]
            else:
                break
        if not perm:
            return "free"
        a = x[perm[-1]]
        return KernelConfig(op="transpose", fn="Transpose", dims=(a, max(_prod(x) // (a * inner), 1), inner))
    return f"no kernel kind covers {op}"


def decompose(model: onnx.ModelProto | bytes, input_shape: Sequence[int] | None = None,
              level: str = "extended") -> Decomposition:
    """Split an ONNX model into the kernels onnxruntime runs after its fusions.

    ``input_shape`` sets the first input's shape (required when it is dynamic). ``level`` is
    onnxruntime's optimization level to decompose at: ``all`` on an x86 host (its NCHWc layout
    conversions become ``reorder`` kernels), ``extended`` for other devices. Raises
    DecompositionError with a message a user can act on.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if isinstance(model, bytes | bytearray):
        try:
            model = onnx.load_from_string(bytes(model))
        except Exception as exc:  # protobuf DecodeError and friends  # noqa: BLE001
            raise DecompositionError(f"not an ONNX model: {type(exc).__name__}") from exc
    if not model.graph.node:
        raise DecompositionError("not an ONNX model: the graph has no nodes")
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    input_shapes = _fix_inputs(model_copy, list(input_shape) if input_shape else None)
    try:
        model_copy = onnx.shape_inference.infer_shapes(model_copy, strict_mode=False)
    except Exception:  # noqa: BLE001 - onnxruntime will say what is wrong
        pass
    optimized = optimize_with_onnxruntime(model_copy, level)
    shapes = tensor_shapes(optimized, input_shapes)
    dtypes: dict[str, int] = {}
    for vi in [*optimized.graph.input, *optimized.graph.value_info, *optimized.graph.output]:
        dtypes[vi.name] = vi.type.tensor_type.elem_type
    for t in optimized.graph.initializer:
        dtypes[t.name] = t.data_type
    out = Decomposition(input_shapes=input_shapes)
    origin = _OriginalNodes(model_copy, optimized)
    for i, node in enumerate(optimized.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        covered = origin.of(node)
        result = _classify(node, shapes, dtypes)
        if result == "free":
            out.free.append({"node": name, "op_type": node.op_type})
        elif isinstance(result, str):
            out.unsupported.append({"node": name, "op_type": node.op_type, "reason": result})
        else:
            nodes = [n for n, _ in covered] or [name]
            op_types = [t for _, t in covered] or [node.op_type]
            out.kernels.append(Kernel(nodes=nodes, op_types=op_types, config=result, runtime_op=node.op_type))
    return out


class _OriginalNodes:
    """Which nodes of the user's graph an optimized node stands for: the producers of its outputs
    and, going back, of every tensor the optimization fused away (a Conv, its BatchNormalization
    and its Relu for one FusedConv). The NCHWc pass renames tensors but names each node after the
    tensor it replaces (``<tensor>_nchwc``); its layout conversions stand for no user node."""

    def __init__(self, original: onnx.ModelProto, optimized: onnx.ModelProto) -> None:
        self.producer = {o: n for n in original.graph.node for o in n.output if o}
        self.by_name = {n.name: n for n in original.graph.node if n.name}
        self.order = {n.name or n.output[0]: i for i, n in enumerate(original.graph.node)}
        kept = {t for n in optimized.graph.node for t in [*n.input, *n.output] if t}
        kept |= {i.name for i in optimized.graph.input} | {t.name for t in optimized.graph.initializer}
        kept |= {n.name.removesuffix("_nchwc") for n in optimized.graph.node if n.name.endswith("_nchwc")}
        kept |= {o for n in optimized.graph.node if n.name in self.by_name and not set(n.output) & set(self.producer)
                 for o in self.by_name[n.name].output}  # a node kept by name whose outputs were renamed
        self.kept = kept

    def of(self, node: onnx.NodeProto) -> list[tuple[str, str]]:
        if node.op_type.startswith("Reorder"):
            return []
        starts = [self.producer.get(o) for o in node.output if o in self.producer]
        if not starts and node.name.endswith("_nchwc"):
            starts = [self.producer.get(node.name.removesuffix("_nchwc"))]
        elif not starts and node.name in self.by_name:
            starts = [self.by_name[node.name]]
        found: dict[str, str] = {}
        stack = [p for p in starts if p is not None]
        while stack:
            p = stack.pop()
            key = p.name or p.output[0]
            if key in found:
                continue
            found[key] = p.op_type
            stack += [self.producer[i] for i in p.input if i and i not in self.kept and i in self.producer]
        return sorted(found.items(), key=lambda kv: self.order.get(kv[0], 0))
