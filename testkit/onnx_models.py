"""Small hand-built ONNX models for the ONNX prediction tests: a stem conv + ReLU, global pooling
and a classifier MatMul (kernels onnxruntime fuses and runs), followed by a CumSum that no kernel
kind covers (reported as unsupported, never dropped)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def classifier_onnx(input_shape: list, output_shape: list | None = None, only_unsupported: bool = False) -> bytes:
    """The serialized model; ``input_shape`` may name dynamic axes (``["N", 3, "H", "W"]``).
    ``only_unsupported``: the CumSum alone, a model with no known kernel."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.array(1, np.int64), "axis")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["c"], ["r"], name="stem_relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fc"], ["l"], name="classifier"),
             helper.make_node("CumSum", ["l", "axis"], ["y"], name="cumsum")]
    if only_unsupported:
        nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], name="cumsum")]
        inits = inits[2:]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
