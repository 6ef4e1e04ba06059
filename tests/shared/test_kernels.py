"""Kernel decomposition: onnxruntime's fusions on a hand-built graph, errors, and the one-kernel
models a kernel campaign measures decompose back into exactly their kernel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from shared.kernel_space import sample_kernels
from shared.kernels import (
    NCHWC,
    CampaignConfig,
    DecompositionError,
    KernelConfig,
    decompose,
    kernel_graph,
    nchwc_block_size,
    optimize_with_onnxruntime,
    parse_campaign_configs,
    parse_input_shape,
    runs_blocked,
)
from shared.schemas import KERNEL_HELPER_PREFIX


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).uniform(0.5, 1.5, shape).astype(np.float32), name)


def hand_built(batch_dim: int | str = 1, size: int | str = 16) -> onnx.ModelProto:
    """conv-BN-Relu -> depthwise conv-BN-Clip -> residual Add -> GAP -> Flatten -> MatMul+Add ->
    Softmax, plus a CumSum that no kernel kind covers."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=8, name="dw2"),
        helper.make_node("BatchNormalization", ["c2", "s2", "b2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("Clip", ["n2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Add", ["r2", "r1"], ["sum"], name="residual"),
        helper.make_node("GlobalAveragePool", ["sum"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1, name="softmax"),
        helper.make_node("CumSum", ["prob", "axis"], ["y"], name="cumsum"),
    ]
    inits = [_w("w1", 8, 3, 3, 3), _w("w2", 8, 1, 3, 3), _w("fc_w", 8, 4), _w("fc_b", 4)]
    for i in (1, 2):
        inits += [_w(f"{p}{i}", 8) for p in ("s", "b", "m", "v")]
    inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi"),
              numpy_helper.from_array(np.array(1, np.int64), "axis")]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_hand_built_graph_gives_the_kernels_onnxruntime_runs() -> None:
    parts = decompose(hand_built())
    got = [(k.config.op, k.config.fn, k.runtime_op, k.nodes) for k in parts.kernels]
    assert got == [
        ("conv", "Relu", "FusedConv", ["conv1", "bn1", "relu1"]),  # BN folded into the conv, Relu fused
        ("dwconv", "Clip", "FusedConv", ["dw2", "bn2", "relu6"]),  # one input channel per group; Clip = Relu6
        ("binary", "Add", "Add", ["residual"]),  # the residual Add stays its own kernel at this level
        ("global_pool", "GlobalAveragePool", "GlobalAveragePool", ["gap"]),
        ("matmul", "none", "Gemm", ["fc", "fc_bias"]),  # MatMul + bias Add -> Gemm
        ("softmax", "Softmax", "Softmax", ["softmax"]),
    ]
    assert parts.kernels[0].op_types == ["Conv", "BatchNormalization", "Relu"]
    conv = parts.kernels[0].config.values
    assert (conv["cin"], conv["cout"], conv["h"], conv["w"], conv["kernel"], conv["stride"]) == (3, 8, 16, 16, 3, 1)
    assert parts.kernels[1].config.values["groups"] == 8
    assert parts.kernels[2].config.values == {"elements": 8 * 16 * 16, "elements_b": 8 * 16 * 16, "trailing": 0}
    assert parts.kernels[4].config.values == {"batch": 1, "m": 1, "k": 8, "n": 4, "bias": 1}
    assert [u["op_type"] for u in parts.unsupported] == ["CumSum"]  # listed, never dropped
    assert "no kernel kind covers CumSum" in parts.unsupported[0]["reason"]
    covered = [n for k in parts.kernels for n in k.nodes] + [f["node"] for f in parts.free] + [
        u["node"] for u in parts.unsupported]
    assert sorted(covered) == sorted(n.name for n in hand_built().graph.node)  # every node, once


def test_dynamic_input_needs_a_shape_and_then_scales() -> None:
    model = hand_built(batch_dim="N", size="S")
    with pytest.raises(DecompositionError, match="dynamic shape"):
        decompose(model)
    small = decompose(model, [1, 3, 16, 16])
    big = decompose(model, parse_input_shape("1x3x32x32"))
    assert small.kernels[0].config.values["h"] == 16 and big.kernels[0].config.values["h"] == 32
    assert big.input_shapes == {"x": [1, 3, 32, 32]}
    with pytest.raises(DecompositionError, match="rank"):
        decompose(model, [1, 3, 32])


def test_bad_bytes_and_bad_shapes_are_refused_with_a_message() -> None:
    with pytest.raises(DecompositionError, match="not an ONNX model"):
        decompose(b"this is not a model")
    with pytest.raises(ValueError, match="1x3x512x1024"):
        parse_input_shape("1x3xbig")
    with pytest.raises(ValueError, match="between 1 and 65536"):
        parse_input_shape("1x0x4x4")


def test_every_sampled_one_kernel_model_decomposes_into_its_kernel() -> None:
    configs = sample_kernels(60, seed=5, reorders=False)
    assert {c.op for c in configs} >= {"conv", "dwconv", "matmul", "overhead"}
    for cfg in configs:
        if cfg.op == "overhead":
            continue
        assert [k.config for k in decompose(kernel_graph(cfg)).kernels] == [cfg], cfg.label


def test_sampled_kernels_keep_their_config_under_the_nchwc_pass() -> None:
    """On an x86 host (onnxruntime's NCHWc pass) a one-kernel model holds its kernel plus layout
    conversions and ``aux_`` helpers; the kernel itself decomposes back into its config, e.g. the
    NCHWc Upsample a whole model runs after a conv (``nchwc-linear``), not the plain Resize."""
    configs = [c for c in sample_kernels(300, seed=7, reorders=True) if c.op == "resize"]
    assert {"nchwc-linear", "nchwc-nearest", "linear"} <= {c.fn for c in configs}
    for cfg in configs:
        kernels = decompose(kernel_graph(cfg), level="all").kernels
        own = [k.config for k in kernels
               if k.config.op != "reorder" and not any(n.startswith(KERNEL_HELPER_PREFIX) for n in k.nodes)]
        assert own == [cfg], cfg.label


def test_kernel_configs_validate_and_travel_with_block_configs() -> None:
    with pytest.raises(ValueError, match="takes dims"):
        KernelConfig(op="softmax", fn="Softmax", dims=(1, 2, 3))
    with pytest.raises(ValueError, match="fn must be one of"):
        KernelConfig(op="pool", fn="Softmax", dims=(8, 8, 8, 3, 2))
    mixed = parse_campaign_configs([
        {"kind": "conv", "cin": 3, "cout": 8, "kernel": 3, "stride": 1, "h": 8, "w": 8},
        {"kind": "kernel", "op": "softmax", "fn": "Softmax", "dims": [4, 16]},
    ])
    assert [c.kind for c in mixed] == ["conv", "kernel"]
    assert CampaignConfig is not None


def test_the_blocked_layout_feature_follows_onnxruntimes_own_graph() -> None:
    """``runs_blocked`` (a kernel feature: off the NCHWc path a depthwise conv runs several times
    slower) says what onnxruntime's optimized one-kernel model runs, on sampled kernels of every
    layout-sensitive kind, channel counts on and off the block."""
    if not nchwc_block_size():
        pytest.skip("this CPU's onnxruntime has no NCHWc pass (no AVX2)")
    configs = [c for c in sample_kernels(400, seed=11) if c.op in ("conv", "dwconv", "pool", "global_pool", "resize")]
    seen = set()
    for cfg in configs:
        graph = optimize_with_onnxruntime(kernel_graph(cfg), "all").graph
        blocked = any(n.domain == NCHWC and not n.op_type.startswith("Reorder") for n in graph.node)
        assert runs_blocked(cfg) == blocked, cfg.label
        seen.add((cfg.op, blocked))
    assert {("dwconv", True), ("dwconv", False), ("conv", True), ("conv", False)} <= seen
