"""The LIR and down blocks are the paper's Fig. 2 blocks, and a config says which definition of a
block it describes (a measurement of an older form never passes for the current one)."""

from __future__ import annotations

import onnx
import pytest
from pydantic import ValidationError

from shared.config import definition_of, is_current_definition, parse_block
from shared.export import export_block_onnx

Conv = tuple[int, int, str]  # (kernel, stride, "dw" for depthwise else "full")


def _branches_into_add(raw: dict) -> list[list[Conv]]:
    """Every path from the graph input to the block's residual Add, as its conv sequence
    (kernel, stride, depthwise or not) read from the exported ONNX graph."""
    model = onnx.load_from_string(export_block_onnx(parse_block(raw)))
    producer = {out: node for node in model.graph.node for out in node.output}
    add = next(n for n in model.graph.node if n.op_type == "Add")

    def chain(tensor: str) -> list[Conv]:
        convs: list[Conv] = []
        while tensor in producer:
            node = producer[tensor]
            if node.op_type == "Conv":
                a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
                channels_in = _channels(model, node.input[1])
                kind = "dw" if a.get("group", 1) > 1 and a["group"] == channels_in else "full"
                convs.append((a["kernel_shape"][0], a["strides"][0], kind))
            assert node.op_type in ("Conv", "Relu", "BatchNormalization"), f"unexpected {node.op_type}"
            tensor = node.input[0]
        assert tensor == model.graph.input[0].name
        return convs[::-1]

    return sorted((chain(t) for t in add.input), key=len)


def _channels(model: onnx.ModelProto, weight: str) -> int:
    """Output channels of a conv weight (= groups of a depthwise conv)."""
    init = next(i for i in model.graph.initializer if i.name == weight)
    return init.dims[0]


def test_lir_is_fig_2b_with_identity_residual():
    raw = {"kind": "lir", "cin": 16, "cmid": 48, "cout": 16, "kernel": 3, "stride": 1, "h": 16, "w": 16}
    identity, main = _branches_into_add(raw)
    assert identity == []
    assert main == [(3, 1, "full"), (1, 1, "full"), (3, 1, "dw"), (1, 1, "full")]


def test_lir_with_stride_has_no_residual_and_strides_its_depthwise_conv():
    raw = {"kind": "lir", "cin": 16, "cmid": 48, "cout": 24, "kernel": 5, "stride": 2, "h": 16, "w": 16}
    model = onnx.load_from_string(export_block_onnx(parse_block(raw)))
    assert not any(n.op_type == "Add" for n in model.graph.node)
    convs = [
        tuple(onnx.helper.get_attribute_value(a) for a in n.attribute if a.name in ("kernel_shape", "strides"))
        for n in model.graph.node
        if n.op_type == "Conv"
    ]
    assert convs == [([3, 3], [1, 1]), ([1, 1], [1, 1]), ([5, 5], [2, 2]), ([1, 1], [1, 1])]


def test_down_is_fig_2a():
    raw = {"kind": "down", "cin": 16, "clead": 12, "cmid": 32, "cout": 24, "h": 16, "w": 16}
    shortcut, main = _branches_into_add(raw)
    assert shortcut == [(3, 2, "dw"), (1, 1, "full")]
    assert main == [(3, 1, "full"), (1, 1, "full"), (3, 2, "dw"), (3, 1, "dw"), (1, 1, "full")]


def test_lead_width_defaults_to_cin():
    cfg = parse_block({"kind": "down", "cin": 16, "cmid": 32, "cout": 24, "h": 16, "w": 16})
    assert cfg.clead == 16


@pytest.mark.parametrize("kind", ["lir", "down"])
def test_definition_is_in_the_key_and_an_older_one_is_refused(kind):
    raw = {"kind": kind, "cin": 16, "cmid": 32, "cout": 16, "h": 16, "w": 16}
    cfg = parse_block(raw)
    assert cfg.definition == definition_of(kind) == 2
    assert cfg.model_dump()["definition"] == 2  # stored with every config
    with pytest.raises(ValidationError, match="older form"):
        parse_block({**raw, "definition": 1})
    assert not is_current_definition({**raw, "definition": 1})
    assert is_current_definition(cfg.model_dump())
    # the hashed content names the definition: the same fields under another number hash apart
    assert cfg.key() != _key_without_definition(cfg)


def _key_without_definition(cfg) -> str:
    import hashlib
    import json

    blob = json.dumps({k: v for k, v in cfg.model_dump().items() if k != "definition"}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_kinds_never_redefined_are_definition_1_without_a_field():
    cfg = parse_block({"kind": "conv", "cin": 3, "cout": 8, "h": 8, "w": 8})
    assert "definition" not in cfg.model_dump()
    assert definition_of("conv") == 1 and is_current_definition(cfg.model_dump())
