"""The ONNX capture's per-record shortcuts give what the plain, per-node way gives.

The node table serializes the nodes once and appends them to the node-less inference model
(protobuf merges a message field that occurs twice), and the builder shares one normalized
record between nodes whose attributes and shapes agree. Both are checked against the obvious
construction here.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archlint.config import Options
from archlint.frontends.onnx import capture_model
from archlint.frontends.onnx.inference import _inference_model
from archlint.frontends.onnx.node_table import NodeTable

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _input_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    return {
        v.name: tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in v.type.tensor_type.shape.dim)
        for v in model.graph.input
    }


@pytest.mark.parametrize("name", ["light_resnet50.onnx", "light_inception_v1.onnx", "light_shufflenet.onnx"])
def test_serialized_with_is_the_model_with_its_nodes_copied_in(name):
    model = onnx.load(str(LIGHT / name))
    table = NodeTable(list(model.graph.node))
    shapes = _input_shapes(model)
    merged = onnx.load_from_string(table.serialized_with(_inference_model(model, None, shapes)))
    copied = _inference_model(model, table.pairs(), shapes)
    assert len(merged.graph.node) == len(model.graph.node) > 0
    assert merged == copied  # every field, the nodes in the table's order
    # a table in another order carries that order into the bytes
    order = list(reversed(range(len(table))))
    again = onnx.load_from_string(table.reordered(order).serialized_with(
        _inference_model(model, None, shapes)))
    assert [n.name for n in again.graph.node] == [model.graph.node[i].name for i in order]


def _two_conv_model(second_kernel: int) -> onnx.ModelProto:
    """x -> conv a (weight wa) -> conv b (weight wb): equal geometry unless second_kernel != 3."""
    import numpy as np

    weights = [
        numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "wa"),
        numpy_helper.from_array(np.ones((4, 4, second_kernel, second_kernel), np.float32), "wb"),
    ]
    pad = (second_kernel - 1) // 2
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["ya"], name="a", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["ya", "wb"], ["yb"], name="b", kernel_shape=[second_kernel] * 2,
                         pads=[pad] * 4),
    ]
    graph = helper.make_graph(
        nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("yb", TensorProto.FLOAT, None)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nodes_with_equal_attributes_share_one_record_and_others_do_not():
    same = capture_model(_two_conv_model(3), Options()).graph
    a, b = same.nodes["a"], same.nodes["b"]
    assert a["attrs"] is b["attrs"]  # different weight names, one geometry: one record
    assert a["shapes"] == b["shapes"] == ((1, 4, 8, 8),)
    assert a["location"].node == "a" and b["location"].node == "b"  # the node's own facts stay
    other = capture_model(_two_conv_model(5), Options()).graph
    a, b = other.nodes["a"], other.nodes["b"]
    assert a["attrs"] is not b["attrs"]
    assert (a["attrs"].kernel, b["attrs"].kernel) == ((3, 3), (5, 5))
    assert b["attrs"].padding == ((2, 2), (2, 2)) and b["shapes"] == ((1, 4, 8, 8),)
