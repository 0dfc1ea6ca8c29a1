"""The ONNX frontend: op normalization, shapes, safety, failures, and the onnx model zoo."""

from __future__ import annotations

import importlib

import builtins
import importlib.util
import math
import os
import time
import tracemalloc
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archlint.config import Options
from archlint.frontends import TargetError
from archlint.frontends.onnx import capture_file, capture_model
from archlint.graph import Location, WINDOWED, ops

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def _load_fixture_script():
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "fixtures" / "onnx" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mf = _load_fixture_script()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    return mf.write_fixtures(tmp_path_factory.mktemp("onnx_fixtures"))


def capture(model: onnx.ModelProto, **options):
    c = capture_model(model, Options(**options))
    assert c.error is None, c.error
    return c


def node(c, name: str) -> dict:
    return c.graph.nodes[name]


def the_op(m: onnx.ModelProto, **options) -> dict:
    return node(capture(m, **options), "op")


def x_input(shape):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def run_ort(m: onnx.ModelProto) -> list[tuple[int, ...]]:
    """Run a model for real on zeros; returns every output's shape."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
        for i in session.get_inputs()
    }
    return [tuple(o.shape) for o in session.run(None, feeds)]


def window_out(n, k, s, d, pb, pe, ceil_mode):
    """Reference conv/pool output size (ONNX spec and PyTorch; ceil mode drops a last window
    that would start in the end padding)."""
    span = n + pb + pe - (d * (k - 1) + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:
        out -= 1
    return out


def transpose_out(n, k, s, d, pb, pe, op):
    return s * (n - 1) + op + d * (k - 1) + 1 - pb - pe


# ---------------------------------------------------------------------------------------------
# the onnx model zoo shipped with the onnx package


LIGHT_MODELS = {
    "light_bvlc_alexnet.onnx": (1, 1000),
    "light_vgg19.onnx": (1, 1000),
    "light_resnet50.onnx": (1, 1000),
    "light_densenet121.onnx": (1, 1000, 1, 1),
    "light_inception_v1.onnx": (1, 1000),
    "light_inception_v2.onnx": (1, 1000),
    "light_shufflenet.onnx": (1, 1000),
    "light_squeezenet.onnx": (1, 1000, 1, 1),
    "light_zfnet512.onnx": (1, 1000),
}


@pytest.fixture(scope="module")
def light_captures():
    out = {}
    for name in LIGHT_MODELS:
        start = time.perf_counter()
        [c] = capture_file(LIGHT / name, Options())
        out[name] = (c, time.perf_counter() - start)
    return out


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_captures_with_every_shape(light_captures, name):
    c, seconds = light_captures[name]
    g = c.graph
    assert c.error is None and seconds < 5, (c.error, seconds)
    unknown = [n for n in g.nodes if g.nodes[n]["shapes"] is None or g.nodes[n]["op"] == "unknown"]
    assert unknown == []
    assert all(g.nodes[n]["error"] is None for n in g.nodes)
    # The recorded reference output of the model is the oracle for the final shape.
    reference = onnx.load_tensor(str(LIGHT / name.replace(".onnx", "_output_0.pb")))
    [out] = [n for n in g.nodes if g.nodes[n]["op"] == "output"]
    assert g.nodes[out]["shapes"][0] == tuple(reference.dims) == LIGHT_MODELS[name]
    # Weights (initializers and ConstantOfShape outputs) never become IR nodes.
    assert [n for n in g.nodes if g.nodes[n]["op"] == "input"] == [n for n in g.nodes if not g.nodes[n]["inputs"]]
    assert len([n for n in g.nodes if g.nodes[n]["op"] == "input"]) == 1
    model = onnx.load(str(LIGHT / name), load_external_data=False)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    ir_convs = [n for n in g.nodes if g.nodes[n]["op"] == "conv"]
    assert len(ir_convs) == len(convs)
    for n in ir_convs:
        a = g.nodes[n]["attrs"]
        assert a.out_channels == g.nodes[n]["shapes"][0][1]
        assert a.in_channels == g.nodes[g.nodes[n]["inputs"][0]]["shapes"][0][1]
        assert len(a.kernel) == len(a.stride) == len(a.padding) == 2


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_windowed_shapes_match_the_spec_formula(light_captures, name):
    """Every conv/pool's recorded shape follows from its normalized attrs (pads order, ceil)."""
    g = light_captures[name][0].graph
    for n in g.nodes:
        d = g.nodes[n]
        if d["op"] not in ("conv", "max_pool", "avg_pool"):
            continue
        a = d["attrs"]
        in_spatial = g.nodes[d["inputs"][0]]["shapes"][0][2:]
        expected = tuple(
            window_out(size, k, s, dil, pb, pe, a.ceil_mode)
            for size, k, s, dil, (pb, pe) in zip(in_spatial, a.kernel, a.stride, a.dilation, a.padding)
        )
        assert d["shapes"][0][2:] == expected, n


def test_alexnet_linear_and_hardwired_reshape(light_captures):
    g = light_captures["light_bvlc_alexnet.onnx"][0].graph
    linears = [g.nodes[n]["attrs"] for n in ops(g) if g.nodes[n]["op"] == "linear"]
    assert [(a.in_features, a.out_features) for a in linears] == [(9216, 4096), (4096, 4096), (4096, 1000)]
    [reshape] = [n for n in g.nodes if g.nodes[n]["op"] == "reshape"]
    assert g.nodes[reshape]["attrs"].target_shape == (1, 9216)
    assert g.nodes[reshape]["location"] == Location(str(LIGHT / "light_bvlc_alexnet.onnx"), None, reshape)


def test_resnet_sum_is_an_add_merge_of_two_branches(light_captures):
    g = light_captures["light_resnet50.onnx"][0].graph
    adds = [n for n in g.nodes if g.nodes[n]["op"] == "add"]
    assert len(adds) == 16
    assert all(g.nodes[n]["origin"] == "Sum" and len(g.nodes[n]["inputs"]) == 2 for n in adds)


def test_larger_input_breaks_the_hardwired_reshape_at_that_node():
    [c] = capture_file(LIGHT / "light_bvlc_alexnet.onnx", Options(input_shapes=((1, 3, 256, 256),)))
    g = c.graph
    errors = {n: g.nodes[n]["error"] for n in g.nodes if g.nodes[n]["error"]}
    [(reshape, reason)] = errors.items()
    assert g.nodes[reshape]["op"] == "reshape"
    assert "12544" in reason and "9216" in reason and "\n" not in reason
    assert g.nodes[g.nodes[reshape]["inputs"][0]]["shapes"] == ((1, 256, 7, 7),)
    downstream = nx.descendants(g, reshape)
    assert downstream and all(g.nodes[n]["shapes"] is None for n in downstream)


# ---------------------------------------------------------------------------------------------
# op normalization


def test_conv_pads_are_begin_end_pairs_per_axis():
    m = mf.single_op("Conv", [1, 2, 10, 12], weight_shape=[4, 2, 3, 3], pads=[1, 2, 3, 4], strides=[2, 1])
    op = the_op(m)
    a = op["attrs"]
    # ONNX pads: [x1_begin, x2_begin, x1_end, x2_end]
    assert a.padding == ((1, 3), (2, 4))
    assert (a.kernel, a.stride, a.dilation) == ((3, 3), (2, 1), (1, 1))
    assert (a.in_channels, a.out_channels, a.groups, a.bias) == (2, 4, 1, False)
    [ort_shape] = run_ort(m)
    assert op["shapes"] == (ort_shape,) == ((1, 4, window_out(10, 3, 2, 1, 1, 3, False), window_out(12, 3, 1, 1, 2, 4, False)),)


@pytest.mark.parametrize(
    "auto_pad, size, k, s, d, expected",
    [
        # total pad = (ceil(in/s) - 1) * s + (k - 1) * d + 1 - in; odd pixel at the end for UPPER
        ("SAME_UPPER", 16, 3, 2, 1, (0, 1)),
        ("SAME_LOWER", 16, 3, 2, 1, (1, 0)),
        ("SAME_UPPER", 15, 3, 2, 1, (1, 1)),
        ("SAME_LOWER", 10, 2, 3, 1, (1, 0)),
        ("SAME_UPPER", 9, 3, 1, 2, (2, 2)),
        ("SAME_LOWER", 8, 4, 1, 1, (2, 1)),
        ("SAME_UPPER", 8, 4, 1, 1, (1, 2)),
        ("SAME_UPPER", 5, 1, 4, 1, (0, 0)),
        ("VALID", 9, 3, 2, 1, (0, 0)),
    ],
)
def test_conv_auto_pad_resolves_per_spec(auto_pad, size, k, s, d, expected):
    m = mf.single_op(
        "Conv", [1, 1, size, size], weight_shape=[1, 1, k, k],
        auto_pad=auto_pad, strides=[s, s], dilations=[d, d],
    )
    op = the_op(m)
    a = op["attrs"]
    assert a.auto_pad == auto_pad
    assert a.padding == (expected, expected)
    # onnxruntime refuses dilation with SAME_*; ONNX's own inference is the oracle there
    [real_shape] = run_ort(m) if d == 1 else op["shapes"]
    assert op["shapes"][0] == real_shape
    assert real_shape[2] == window_out(size, k, s, d, *expected, False)
    if auto_pad != "VALID":
        assert real_shape[2] == math.ceil(size / s)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_pool_auto_pad_resolves_per_spec(auto_pad):
    m = mf.single_op("MaxPool", [1, 1, 11, 8], kernel_shape=[4, 3], strides=[3, 2], auto_pad=auto_pad)
    op = the_op(m)
    # H: out 4, total (4-1)*3+4-11 = 2; W: out 4, total (4-1)*2+3-8 = 1
    assert op["attrs"].padding == ((1, 1), (0, 1) if auto_pad == "SAME_UPPER" else (1, 0))
    assert op["shapes"] == tuple(run_ort(m)[:1]) == ((1, 1, 4, 4),)


@pytest.mark.parametrize(
    "op_type, size, k, s, pads, ceil_mode, dilation",
    [
        ("MaxPool", 6, 3, 2, [0, 0, 0, 0], 0, 1),
        ("MaxPool", 6, 3, 2, [0, 0, 0, 0], 1, 1),
        ("MaxPool", 7, 2, 2, [1, 1, 1, 1], 1, 1),
        ("MaxPool", 5, 2, 2, [1, 1, 1, 1], 1, 1),  # last window would start in the padding
        ("MaxPool", 9, 3, 2, [1, 0, 1, 0], 1, 2),
        ("MaxPool", 10, 3, 3, [0, 2, 1, 0], 0, 1),
        ("AveragePool", 7, 3, 2, [1, 1, 1, 1], 1, 1),
        ("AveragePool", 8, 3, 2, [0, 1, 0, 1], 1, 1),
        ("LpPool", 7, 3, 2, [1, 0, 1, 0], 0, 1),
    ],
)
def test_pool_geometry_matches_onnxruntime(op_type, size, k, s, pads, ceil_mode, dilation):
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads)
    if op_type != "LpPool":
        attrs["ceil_mode"] = ceil_mode
    if dilation != 1:
        attrs["dilations"] = [dilation, dilation]
    m = mf.single_op(op_type, [1, 2, size, size + 1], opset=19, **attrs)
    op = the_op(m)
    a = op["attrs"]
    assert a.padding == ((pads[0], pads[2]), (pads[1], pads[3]))
    assert a.ceil_mode is bool(ceil_mode and op_type != "LpPool")
    expected = (1, 2) + tuple(
        window_out(n, k, s, dilation, pb, pe, a.ceil_mode)
        for n, (pb, pe) in zip((size, size + 1), a.padding)
    )
    [ort_shape] = run_ort(m)
    assert op["shapes"] == ((ort_shape),) and ort_shape == expected


def test_average_pool_count_include_pad_default_is_onnx_not_torch():
    default = the_op(mf.single_op("AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    explicit = the_op(mf.single_op("AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], count_include_pad=1))
    assert default["attrs"].count_include_pad is False  # ONNX default 0, PyTorch default True
    assert explicit["attrs"].count_include_pad is True
    assert default["op"] == "avg_pool" and default["attrs"].ceil_mode is False


@pytest.mark.parametrize(
    "size, k, s, d, pads, output_padding, output_shape, auto_pad, expected_pads",
    [
        (8, 3, 2, 1, [1, 1, 1, 1], [1, 1], None, None, ((1, 1), (1, 1))),
        (8, 4, 2, 1, [1, 2, 2, 1], [0, 0], None, None, ((1, 2), (2, 1))),
        (7, 3, 3, 2, [0, 0, 0, 0], [2, 1], None, None, ((0, 0), (0, 0))),
        # output_shape generates the pads: total = s*(in-1) + op + (k-1)*d + 1 - out
        (8, 4, 2, 1, None, [0, 0], [15, 17], None, ((2, 1), (1, 0))),
        (8, 4, 2, 1, None, [0, 0], [15, 17], "SAME_UPPER", ((1, 2), (0, 1))),
        # SAME_*: target in * stride
        (7, 3, 2, 1, None, [0, 0], None, "SAME_UPPER", ((0, 1), (0, 1))),
        (7, 3, 2, 1, None, [0, 0], None, "SAME_LOWER", ((1, 0), (1, 0))),
        (5, 5, 2, 1, None, [1, 1], None, "SAME_LOWER", ((2, 2), (2, 2))),
    ],
)
def test_conv_transpose_geometry_matches_onnxruntime(
    size, k, s, d, pads, output_padding, output_shape, auto_pad, expected_pads
):
    attrs = dict(kernel_shape=[k, k], strides=[s, s], dilations=[d, d], output_padding=output_padding)
    if pads is not None:
        attrs["pads"] = pads
    if output_shape is not None:
        attrs["output_shape"] = output_shape
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    m = mf.single_op("ConvTranspose", [1, 3, size, size], weight_shape=[3, 2, k, k], **attrs)
    op = the_op(m)
    a = op["attrs"]
    assert op["op"] == "conv_transpose"
    assert a.padding == expected_pads
    assert a.output_padding == tuple(output_padding)
    assert a.auto_pad == (auto_pad or "")
    assert (a.in_channels, a.out_channels) == (3, 2)
    formula = tuple(transpose_out(size, k, s, d, pb, pe, op_) for (pb, pe), op_ in zip(a.padding, a.output_padding))
    [ort_shape] = run_ort(m)
    assert op["shapes"] == (ort_shape,)
    assert ort_shape[2:] == formula
    if output_shape is not None:
        assert ort_shape[2:] == tuple(output_shape) and a.extra["output_shape"] == tuple(output_shape)


def test_global_pools_and_spatial_reduce_mean():
    assert the_op(mf.single_op("GlobalAveragePool", [1, 4, 5, 6]))["op"] == "global_pool"
    assert the_op(mf.single_op("GlobalMaxPool", [1, 4, 5, 6]))["attrs"].mode == "max"
    spatial = the_op(mf.single_op("ReduceMean", [1, 4, 5, 6], opset=13, axes=[2, 3], keepdims=1))
    assert spatial["op"] == "global_pool" and spatial["shapes"] == ((1, 4, 1, 1),)
    # opset 18 moves axes to an input (negative axes count from the end)
    axes = numpy_helper.from_array(np.array([-1, -2], np.int64), "axes")
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="op", keepdims=0)],
        "r", [x_input([1, 4, 5, 6])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [axes],
    )
    m18 = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    op = the_op(m18)
    assert op["op"] == "global_pool" and op["shapes"] == ((1, 4),)
    channel = the_op(mf.single_op("ReduceMean", [1, 4, 5, 6], opset=13, axes=[1]))
    # a mean over channels mixes no positions: a reduce, which keeps the receptive field
    assert channel["op"] == "reduce" and channel["shapes"] == ((1, 1, 5, 6),)
    assert channel["attrs"].extra["dims"] == (1,)


def _graph_model(nodes, initializers, in_shape=(1, 3, 8, 8), opset=17, outputs=("y",)):
    g = helper.make_graph(
        nodes, "m", [x_input(list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], initializers,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.array(values, np.float32), name)


def test_pad_from_input_tensor_and_from_attribute():
    m = _graph_model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="op", mode="reflect")],
        [ints("pads", [0, 0, 1, 2, 0, 0, 3, 4])],
    )
    op = the_op(m)
    assert op["op"] == "pad" and op["attrs"].padding == ((1, 3), (2, 4))
    assert op["attrs"].padding_mode == "reflect"
    assert op["shapes"] == tuple(run_ort(m)) == ((1, 3, 12, 14),)
    # Pad-2: pads as an attribute, constant mode; a non-zero value is not zero padding
    m2 = mf.single_op("Pad", [1, 3, 8, 8], opset=2, pads=[0, 0, 0, 1, 0, 0, 2, 0], value=1.5)
    op2 = the_op(m2)
    assert op2["attrs"].padding == ((0, 2), (1, 0)) and op2["attrs"].padding_mode == "constant"
    # Pad-18 with axes: only the listed axes are padded; edge mode is replicate
    m3 = _graph_model(
        [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], name="op", mode="edge")],
        [ints("pads", [2, 1]), ints("axes", [3])], opset=18,
    )
    op3 = the_op(m3)
    assert op3["attrs"].padding == ((0, 0), (2, 1)) and op3["attrs"].padding_mode == "replicate"
    assert op3["shapes"] == tuple(run_ort(m3)) == ((1, 3, 8, 11),)


def test_resize_scales_and_sizes_and_upsample():
    scales = _graph_model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="op", mode="nearest")],
        [floats("scales", [1, 1, 2, 3])],
    )
    op = the_op(scales)
    assert op["op"] == "upsample" and op["attrs"].scale == (2.0, 3.0) and op["attrs"].size is None
    assert op["attrs"].extra["coordinate_transformation_mode"] == "half_pixel"
    assert op["shapes"] == tuple(run_ort(scales)) == ((1, 3, 16, 24),)
    sizes = _graph_model(
        [helper.make_node(
            "Resize", ["x", "", "", "sizes"], ["y"], name="op", mode="linear",
            coordinate_transformation_mode="align_corners",
        )],
        [ints("sizes", [1, 3, 15, 9])],
    )
    op = the_op(sizes)
    assert op["attrs"].size == (15, 9) and op["attrs"].mode == "linear" and op["attrs"].align_corners is True
    assert op["shapes"] == tuple(run_ort(sizes)) == ((1, 3, 15, 9),)
    # scales from a Constant node (a shape computation, not an IR node)
    const = _graph_model(
        [
            helper.make_node("Constant", [], ["s"], value=floats("v", [1, 1, 2, 2])),
            helper.make_node("Upsample", ["x", "s"], ["y"], name="op", mode="nearest"),
        ],
        [], opset=9,
    )
    c = capture(const)
    assert [n for n in c.graph.nodes if c.graph.nodes[n]["op"] not in ("input", "output")] == ["op"]
    assert node(c, "op")["attrs"].scale == (2.0, 2.0)
    assert node(c, "op")["attrs"].extra["coordinate_transformation_mode"] == "asymmetric"


def test_resize_to_the_size_of_another_tensor_records_size_from():
    # F.interpolate(x, size=skip.shape[2:]) as exporters write it
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["x"], ["sx"]),
        helper.make_node("Slice", ["sx", "s2", "e4"], ["hw"]),
        helper.make_node("Shape", ["p"], ["sp"]),
        helper.make_node("Slice", ["sp", "s0", "s2"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["p", "", "", "sizes"], ["y"], name="up", mode="nearest"),
    ]
    m = _graph_model(nodes, [ints("s0", [0]), ints("s2", [2]), ints("e4", [4])], in_shape=(1, 3, 9, 7))
    c = capture(m)
    up = node(c, "up")
    assert up["attrs"].size_from == "x" and up["attrs"].size == (9, 7)
    assert up["shapes"] == tuple(run_ort(m)) == ((1, 3, 9, 7),)
    assert sorted(c.graph.nodes) == ["output", "pool", "up", "x"]


def test_slice_concat_flatten_reshape():
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"], name="crop"),
        helper.make_node("Concat", ["s", "s"], ["c"], name="cat", axis=1),
        helper.make_node("Flatten", ["c"], ["f"], name="flat", axis=1),
        helper.make_node("Reshape", ["f", "target"], ["y"], name="view"),
    ]
    m = _graph_model(
        nodes,
        [ints("starts", [1, 0]), ints("ends", [7, 2**63 - 1]), ints("axes", [2, -1]), ints("steps", [1, 2]),
         ints("target", [0, -1, 2])],
    )
    c = capture(m)
    assert node(c, "crop")["attrs"].slices == ((1, 7, 1), (0, None, 2))
    assert node(c, "cat")["attrs"].axis == 1 and node(c, "cat")["inputs"] == ("crop", "crop")
    assert node(c, "flat")["attrs"].axis == 1
    assert node(c, "view")["attrs"].target_shape == (None, -1, 2)  # 0 copies the input dim
    assert node(c, "view")["shapes"] == tuple(run_ort(m)) == ((1, 72, 2),)


def test_reshape_target_computed_from_a_runtime_shape_is_not_hardcoded():
    # x.view(x.size(0), -1) as exported: Shape -> Gather -> Unsqueeze -> Concat with -1
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="view"),
    ]
    m = _graph_model(nodes, [ints("zero", 0), ints("axes0", [0]), ints("minus1", [-1])])
    c = capture(m)
    assert node(c, "view")["attrs"].target_shape == (None, -1)
    assert node(c, "view")["shapes"] == ((1, 192),)
    assert sorted(c.graph.nodes) == ["output", "view", "x"]


def test_gemm_and_matmul_are_linear_with_features_from_the_weight():
    gemm = mf.single_op("Gemm", [2, 12], weight_shape=[12, 5])
    a = the_op(gemm)["attrs"]
    assert (a.in_features, a.out_features) == (12, 5)
    gemm_t = mf.single_op("Gemm", [2, 12], weight_shape=[5, 12], transB=1)
    op = the_op(gemm_t)
    assert (op["op"], op["attrs"].in_features, op["attrs"].out_features) == ("linear", 12, 5)
    assert op["shapes"] == tuple(run_ort(gemm_t)) == ((2, 5),)
    matmul = mf.single_op("MatMul", [2, 7, 12], weight_shape=[12, 3])
    op = the_op(matmul)
    assert (op["op"], op["attrs"].in_features, op["attrs"].out_features) == ("linear", 12, 3)


def test_elementwise_merges_versus_constant_operands():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "k"], ["m"], name="scale"),
        helper.make_node("Sub", ["m", "r"], ["s"], name="sub"),
        helper.make_node("Div", ["s", "a"], ["d"], name="div"),
        helper.make_node("Mul", ["d", "s"], ["y"], name="mul"),
    ]
    c = capture(_graph_model(nodes, [floats("k", [2.0])]))
    kinds = {n: node(c, n)["op"] for n in ("relu", "add", "scale", "sub", "div", "mul")}
    assert kinds == {"relu": "pointwise", "add": "add", "scale": "pointwise", "sub": "sub", "div": "div", "mul": "mul"}
    assert node(c, "scale")["inputs"] == ("add",)  # the constant is a weight, not an IR input
    assert node(c, "add")["inputs"] == ("relu", "x")


def test_norms_pointwise_and_pixel_shuffles():
    bn_inits = [floats(n, [1.0] * 4) for n in ("s", "b", "mu", "var")]
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "mu", "var"], ["n"], name="bn"),
        helper.make_node("LRN", ["n"], ["l"], name="lrn", size=3),
        helper.make_node("InstanceNormalization", ["l", "s", "b"], ["i"], name="inorm"),
        helper.make_node("Dropout", ["i"], ["dr"], name="drop"),
        helper.make_node("Clip", ["dr"], ["cl"], name="clip"),
        helper.make_node("Cast", ["cl"], ["ca"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Softmax", ["ca"], ["sm"], name="softmax", axis=1),
        helper.make_node("Identity", ["sm"], ["id"], name="ident"),
        helper.make_node("DepthToSpace", ["id"], ["ps"], name="d2s", blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["ps"], ["y"], name="s2d", blocksize=2),
    ]
    m = _graph_model(nodes, bn_inits, in_shape=(1, 4, 6, 6))
    c = capture(m)
    kinds = [node(c, n)["op"] for n in ("bn", "lrn", "inorm", "drop", "clip", "cast", "softmax", "ident", "d2s", "s2d")]
    # Softmax says which dim it normalizes: token mixing when that dim holds positions
    assert kinds == (["norm"] * 3 + ["pointwise"] * 3 + ["softmax"] + ["pointwise"]
                     + ["pixel_shuffle", "pixel_unshuffle"])
    assert node(c, "d2s")["attrs"].factor == 2 and node(c, "d2s")["shapes"] == ((1, 1, 12, 12),)
    assert node(c, "s2d")["shapes"] == tuple(run_ort(m)) == ((1, 4, 6, 6),)


def test_locations_origins_and_synthesized_names(fixtures):
    [c] = capture_file(fixtures["clean_small_convnet.onnx"], Options())
    conv = node(c, "conv1")
    assert conv["location"] == Location(str(fixtures["clean_small_convnet.onnx"]), None, "conv1")
    assert conv["origin"] == "Conv"
    unnamed = mf.single_op("Relu", [1, 3, 4, 4])
    unnamed.graph.node[0].name = ""
    c2 = capture(unnamed)
    assert "Relu_0" in c2.graph and node(c2, "Relu_0")["location"].node == "Relu_0"
    assert node(c2, "Relu_0")["location"].file is None


def test_unsorted_node_order_is_accepted():
    m = _graph_model(
        [helper.make_node("Relu", ["a"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["a"], name="first")],
        [],
    )
    c = capture(m)
    assert list(ops(c.graph)) == ["x", "first", "second", "output"]


# ---------------------------------------------------------------------------------------------
# inputs


def test_symbolic_batch_is_assumed_one_with_a_note(fixtures):
    [c] = capture_file(fixtures["clean_small_convnet.onnx"], Options())
    assert c.graph.graph["input_assumed"] is True
    assert c.graph.graph["input_shapes"] == [(1, 3, 32, 32)]
    assert any("assumed 1" in note for note in c.notes)


def test_input_shapes_option_overrides_declared_dims(fixtures):
    [c] = capture_file(fixtures["clean_small_convnet.onnx"], Options(input_shapes=((2, 3, 64, 48),)))
    g = c.graph
    assert g.graph["input_assumed"] is False and g.graph["input_shapes"] == [(2, 3, 64, 48)]
    assert node(c, "pool1")["shapes"] == ((2, 8, 32, 24),)
    assert node(c, "fc")["shapes"] == ((2, 10),)
    with pytest.raises(TargetError, match="rank 3"):
        capture_file(fixtures["clean_small_convnet.onnx"], Options(input_shapes=((1, 3, 64),)))
    with pytest.raises(TargetError, match="2 input shapes"):
        capture_file(fixtures["clean_small_convnet.onnx"], Options(input_shapes=((1, 3, 8, 8), (1, 3, 8, 8))))


def test_symbolic_spatial_dims_get_an_assumed_example_with_a_note():
    m = mf.single_op("Conv", ["N", 3, "H", "W"], weight_shape=[4, 3, 3, 3])
    c = capture(m)
    assert c.graph.graph["input_assumed"] is True
    assert c.graph.graph["input_shapes"] == [(1, 3, 224, 224)]
    assert node(c, "op")["shapes"] == ((1, 4, 222, 222),)
    assert any("symbolic" in n and "H" in n and "assumed 1x3x224x224" in n for n in c.notes)


def test_symbolic_dims_nothing_can_choose_are_a_usage_error():
    m = mf.single_op("Relu", ["N", "C", "H", "W"])
    c = capture_model(m, Options())
    assert c.graph is None and "pass --input-shape" in c.error and "C, H, W" in c.error


# ---------------------------------------------------------------------------------------------
# safety: external data is never read, huge tensors are never allocated


def declared_tensor(name: str, data_type: int, dims: list[int]) -> TensorProto:
    """A tensor that declares its dims but carries no data (as a stripped or external one does)."""
    tensor = TensorProto(name=name, data_type=data_type)
    tensor.dims.extend(dims)
    return tensor


def _external(tensor: TensorProto, location: str) -> TensorProto:
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * math.prod(tensor.dims)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize("location", ["../../etc/passwd", "/definitely/not/here/weights.bin", "../secret.bin"])
def test_external_data_is_never_opened(tmp_path, monkeypatch, location):
    # A 2**29-float (2 GB) conv weight stored "externally" at a hostile path.
    weight = _external(declared_tensor("w", TensorProto.FLOAT, [2**15, 2**14, 1, 1]), location)
    bias = _external(declared_tensor("b", TensorProto.FLOAT, [2**15]), location)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[1, 1])]
    m = _graph_model(nodes, [weight, bias], in_shape=(1, 2**14, 2, 2))
    path = tmp_path / "model" / "nested" / "m.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(m.SerializeToString())

    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    tracemalloc.start()
    try:
        [c] = capture_file(path, Options())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    target = os.path.normpath(os.path.join(path.parent, location))
    assert not any(location in f or os.path.normpath(f) == target or "passwd" in f for f in opened)
    assert peak < 50 * 2**20  # the 2 GB weight was never materialized
    conv = node(c, "conv")
    assert conv["shapes"] == ((1, 2**15, 2, 2),)
    assert (conv["attrs"].in_channels, conv["attrs"].out_channels, conv["attrs"].bias) == (2**14, 2**15, True)
    # every reference outside the model's folder is reported, naming the tensor and the path
    for name in ("w", "b"):
        assert any(f"tensor {name!r}" in n and repr(location) in n and "outside" in n
                   for n in c.notes), c.notes


def test_external_data_inside_the_folder_is_not_reported(tmp_path):
    weight = _external(declared_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1]), "weights/w.bin")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1])]
    path = tmp_path / "m.onnx"
    path.write_bytes(_graph_model(nodes, [weight], in_shape=(1, 3, 4, 4)).SerializeToString())
    [c] = capture_file(path, Options())
    assert not any("outside" in n for n in c.notes)


def test_huge_embedded_declared_tensor_is_not_allocated():
    # Declares 2**29 int64 elements (4 GB) with no data: only its dims may be read.
    huge = declared_tensor("h", TensorProto.INT64, [2**29])
    nodes = [
        helper.make_node("Shape", ["h"], ["hs"]),
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
    ]
    m = _graph_model(nodes, [huge], in_shape=(1, 3, 4, 4))
    tracemalloc.start()
    try:
        c = capture(m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert node(c, "relu")["shapes"] == ((1, 3, 4, 4),)


# ---------------------------------------------------------------------------------------------
# bad files, unknown ops, failures


@pytest.mark.parametrize("name", mf.BROKEN)
def test_broken_files_are_target_errors_with_one_line(fixtures, name):
    with pytest.raises(TargetError) as info:
        capture_file(fixtures[name], Options())
    reason = str(info.value)
    assert reason and "\n" not in reason and "Traceback" not in reason and len(reason) < 300


def test_broken_file_reasons_say_what_is_wrong(fixtures):
    def reason(name):
        with pytest.raises(TargetError) as info:
            capture_file(fixtures[name], Options())
        return str(info.value)

    assert "opset 99" in reason("broken_future_opset_99.onnx")
    assert "cycle" in reason("broken_cycle.onnx") and "add_a" in reason("broken_cycle.onnx")
    assert "'x'" in reason("broken_missing_graph_input.onnx")
    assert "empty" in reason("broken_empty.onnx")
    assert "corrupt or truncated" in reason("broken_truncated.onnx")


def test_in_memory_broken_model_is_a_capture_error_not_a_raise():
    c = capture_model(mf.future_opset(), Options())
    assert c.graph is None and "opset 99" in c.error


def test_api_reports_a_broken_file_as_a_one_line_error(fixtures):
    from archlint.api import lint

    report = lint(fixtures["broken_random_bytes.onnx"])
    [m] = report.models
    assert m.frontend == "onnx" and m.graph is None
    assert m.error and "\n" not in m.error
    assert report.exit_code() == 2


@pytest.mark.parametrize("domain, op_type, origin", [("com.example", "FancyOp", "com.example::FancyOp"), ("", "NotARealOp", "ai.onnx::NotARealOp")])
def test_unknown_op_is_kept_as_unknown_with_a_note(domain, op_type, origin):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node(op_type, ["c"], ["f"], name="mystery", domain=domain),
        helper.make_node("Relu", ["f"], ["y"], name="relu"),
    ]
    g = helper.make_graph(
        nodes, "m", [x_input([1, 3, 8, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [floats("w", np.zeros((4, 3, 3, 3)))],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    c = capture(helper.make_model(g, opset_imports=opsets))
    mystery = node(c, "mystery")
    assert mystery["op"] == "unknown" and mystery["origin"] == origin
    assert mystery["shapes"] is None and mystery["error"] is None
    assert node(c, "relu")["shapes"] is None and node(c, "relu")["error"] is None
    assert node(c, "conv")["shapes"] == ((1, 4, 6, 6),)
    assert any(origin in n and "mystery" in n for n in c.notes)


def test_custom_op_fixture(fixtures):
    [c] = capture_file(fixtures["custom_domain_op.onnx"], Options())
    [unknown] = [n for n in c.graph.nodes if node(c, n)["op"] == "unknown"]
    assert node(c, unknown)["origin"] == mf.UNKNOWN_OPS["custom_domain_op.onnx"]


def test_failing_add_records_the_error_at_that_node(fixtures):
    [c] = capture_file(fixtures["skip_add_mismatch_16x16_vs_15x15.onnx"], Options())
    g = c.graph
    add = node(c, "skip_add")
    assert add["op"] == "add" and add["shapes"] is None
    assert "15x15" in add["error"] and "16x16" in add["error"] and "\n" not in add["error"]
    assert node(c, "conv_main")["shapes"] == ((1, 8, 15, 15),) and node(c, "conv_main")["error"] is None
    assert node(c, "relu_out")["shapes"] is None and node(c, "relu_out")["error"] is None
    assert [n for n in g.nodes if g.nodes[n]["error"]] == ["skip_add"]


def test_failure_in_the_middle_keeps_everything_else():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w"], ["b"], name="conv_b", kernel_shape=[3, 3]),
        helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["a"], ["y2"], name="side"),
        helper.make_node("Relu", ["r"], ["y"], name="relu2"),
    ]
    m = _graph_model(nodes, [floats("w", np.zeros((3, 3, 3, 3)))], outputs=("y", "y2"))
    c = capture(m)
    assert node(c, "cat")["error"] and node(c, "cat")["shapes"] is None
    assert node(c, "side")["shapes"] == ((1, 3, 1, 1),)
    assert node(c, "relu2")["shapes"] is None
    assert node(c, "conv_b")["shapes"] == ((1, 3, 6, 6),)


def test_conv_channel_mismatch_and_oversized_kernel_are_errors():
    wrong_channels = mf.single_op("Conv", [1, 3, 8, 8], weight_shape=[4, 5, 3, 3])
    op = the_op(wrong_channels)
    assert op["shapes"] is None and "3 channels" in op["error"] and "5" in op["error"]
    too_big = mf.single_op("MaxPool", [1, 3, 4, 4], kernel_shape=[5, 5])
    op = the_op(too_big)
    assert op["shapes"] is None and "larger than the padded input" in op["error"]


def test_fixture_manifest_is_consistent(fixtures):
    for name in mf.MANIFEST:
        [c] = capture_file(fixtures[name], Options())
        assert c.graph is not None
        if name in mf.EXPECTED_NODE:
            assert mf.EXPECTED_NODE[name] in c.graph
    for name, path in fixtures.items():
        assert path.stat().st_size < 50_000, name
    assert set(fixtures) == set(mf.MANIFEST) | set(mf.BROKEN)


def test_defect_fixtures_have_the_geometry_their_rule_reads(fixtures):
    def cap(name):
        return capture_file(fixtures[name], Options())[0]

    up = node(cap("conv_transpose_k3_s2_checkerboard.onnx"), "up")
    assert up["attrs"].kernel == (3, 3) and up["attrs"].stride == (2, 2) and up["shapes"] == ((1, 4, 16, 16),)
    down = node(cap("conv_same_upper_stride2.onnx"), "down")
    assert down["attrs"].auto_pad == "SAME_UPPER" and down["attrs"].padding == ((0, 1), (0, 1))
    flat = cap("hardcoded_flatten_gemm.onnx")
    assert node(flat, "fc")["attrs"].in_features == 256 == node(flat, "flatten")["shapes"][0][1]
    odd = node(cap("odd_size_15x15_stride2_conv.onnx"), "down")
    assert odd["attrs"].stride == (2, 2) and cap("odd_size_15x15_stride2_conv.onnx").graph.nodes["conv"]["shapes"] == ((1, 8, 15, 15),)


def test_fixture_models_run_in_onnxruntime_with_the_captured_shapes(fixtures):
    for name in ("clean_small_convnet.onnx", "clean_residual_block.onnx", "conv_transpose_k3_s2_checkerboard.onnx",
                 "conv_same_upper_stride2.onnx", "hardcoded_flatten_gemm.onnx", "odd_size_15x15_stride2_conv.onnx"):
        [c] = capture_file(fixtures[name], Options())
        model = onnx.load(str(fixtures[name]))
        assert [node(c, "output")["shapes"][0]] == run_ort(model), name


# ---------------------------------------------------------------------------------------------
# formulas and receptive fields (modules written by other engineers)


def test_windowed_attrs_agree_with_the_shared_formulas(light_captures):
    formulas = importlib.import_module("archlint.passes.formulas")
    for name in ("light_bvlc_alexnet.onnx", "light_inception_v1.onnx", "light_squeezenet.onnx"):
        g = light_captures[name][0].graph
        for n in g.nodes:
            d = g.nodes[n]
            if d["op"] not in WINDOWED:
                continue
            in_spatial = g.nodes[d["inputs"][0]]["shapes"][0][2:]
            assert formulas.infer_spatial(d["op"], d["attrs"], [in_spatial]) == d["shapes"][0][2:], (name, n)


def _rf_at_last_pool(g):
    from archlint.passes.receptive_field import receptive_field_pass

    receptive_field_pass(g)
    pools = [n for n in ops(g) if g.nodes[n]["op"] == "max_pool"]
    return [rf.size for rf in g.nodes[pools[-1]]["rf"]]


@pytest.mark.parametrize("name, size", [("light_bvlc_alexnet.onnx", 195), ("light_vgg19.onnx", 268)])
def test_receptive_field_at_the_last_pool(name, size):
    importlib.import_module("archlint.passes.receptive_field")
    [c] = capture_file(LIGHT / name, Options())
    assert _rf_at_last_pool(c.graph) == [size, size]


def test_runtime_corrections_reach_downstream_nodes():
    """onnx's inference keeps a ceil_mode window that starts in the end padding, and adds
    output_padding to a SAME ConvTranspose; onnxruntime (and the spec) do neither. The corrected
    sizes must also flow into every node after them."""
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("Conv", ["p", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], name="up", kernel_shape=[5, 5], strides=[2, 2],
                         auto_pad="SAME_LOWER", output_padding=[1, 1]),
        helper.make_node("Relu", ["t"], ["y"], name="relu"),
    ]
    m = _graph_model(nodes, [floats("w", np.zeros((4, 3, 1, 1))), floats("wt", np.zeros((4, 2, 5, 5)))],
                     in_shape=(1, 3, 5, 9), opset=19)
    c = capture(m)
    assert node(c, "pool")["shapes"] == ((1, 3, 3, 5),)
    assert node(c, "conv")["shapes"] == ((1, 4, 3, 5),)
    assert node(c, "up")["shapes"] == ((1, 2, 6, 10),)
    assert node(c, "relu")["shapes"] == tuple(run_ort(m))


@pytest.mark.parametrize("size", [5, 6, 7, 8])
def test_ceil_mode_pool_matches_the_shared_formula_and_onnxruntime(size):
    formulas = importlib.import_module("archlint.passes.formulas")
    m = mf.single_op("AveragePool", [1, 1, size, size], kernel_shape=[3, 3], strides=[2, 2],
                     pads=[1, 1, 1, 1], ceil_mode=1)
    op = the_op(m)
    [ort_shape] = run_ort(m)
    assert op["shapes"] == (ort_shape,)
    assert formulas.infer_spatial("avg_pool", op["attrs"], [(size, size)]) == ort_shape[2:]


def test_gap_in_onnx_inference_is_filled_and_flows_downstream():
    # size = floor(H * 2.5), as exporters write F.interpolate(scale_factor=2.5): onnx's data
    # propagation cannot follow Cast/Floor, so its inference leaves the Resize output unknown.
    nodes = [
        helper.make_node("Shape", ["x"], ["sh"]),
        helper.make_node("Gather", ["sh", "two"], ["h"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hf", "k"], ["h2"]),
        helper.make_node("Floor", ["h2"], ["h3"]),
        helper.make_node("Cast", ["h3"], ["hi"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["hi", "ax0"], ["hu"]),
        helper.make_node("Slice", ["sh", "zero1", "two1"], ["nc"]),
        helper.make_node("Concat", ["nc", "hu", "hu"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], name="up", mode="nearest"),
        helper.make_node("Conv", ["r", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Flatten", ["c"], ["y"], name="flat"),
    ]
    inits = [ints("two", 2), ints("ax0", [0]), ints("zero1", [0]), ints("two1", [2]),
             numpy_helper.from_array(np.array(2.5, np.float32), "k"), floats("w", np.zeros((4, 3, 3, 3)))]
    m = _graph_model(nodes, inits, in_shape=(1, 3, 7, 7))
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    [r] = [v for v in inferred.graph.value_info if v.name == "r"]
    assert not r.type.tensor_type.shape.dim[2].HasField("dim_value")  # the gap is real
    c = capture(m)
    assert node(c, "up")["attrs"].size == (17, 17)
    assert node(c, "up")["shapes"] == ((1, 3, 17, 17),)
    assert node(c, "conv")["shapes"] == ((1, 4, 15, 15),)
    assert node(c, "flat")["shapes"] == tuple(run_ort(m)) == ((1, 900),)
    assert sorted(c.graph.nodes) == ["conv", "flat", "output", "up", "x"]


def test_shared_formulas_fill_what_onnx_leaves_unknown(monkeypatch):
    """Where even per-node ONNX inference gives only a rank, the shared per-op formulas fill it."""
    importlib.import_module("archlint.passes.formulas")
    from archlint.frontends import onnx as frontend

    real_model, real_node = frontend.shape_inference.infer_shapes, frontend.shape_inference.infer_node_outputs

    def rank_only(t):
        out = onnx.TypeProto()
        out.CopyFrom(t)
        for d in out.tensor_type.shape.dim:
            d.Clear()
        return out

    def model_inference(model, *args, **kwargs):
        inferred = real_model(model, *args, **kwargs)
        for v in inferred.graph.value_info:
            v.type.CopyFrom(rank_only(v.type))
        return inferred

    def node_inference(schema, node, *args, **kwargs):
        out = real_node(schema, node, *args, **kwargs)
        return {k: rank_only(t) for k, t in out.items()} if node.op_type in ("Conv", "Relu") else out

    monkeypatch.setattr(frontend.shape_inference, "infer_shapes", model_inference)
    monkeypatch.setattr(frontend.shape_inference, "infer_node_outputs", node_inference)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 0, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
    ]
    m = _graph_model(nodes, [floats("w", np.zeros((4, 3, 3, 3)))], in_shape=(1, 3, 9, 8))
    c = capture(m)
    assert node(c, "conv")["shapes"] == ((1, 4, 4, 4),)
    assert node(c, "relu")["shapes"] == ((1, 4, 4, 4),)
    assert node(c, "pool")["shapes"] == ((1, 4, 2, 2),)
    monkeypatch.undo()
    assert node(c, "pool")["shapes"] == tuple(run_ort(m))


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_node_by_node_walk_agrees_with_whole_model_inference(light_captures, monkeypatch, name):
    """The fallback walk (used after a failure or a correction) gives the same shapes as strict
    whole-model inference on models where the latter is right."""
    from archlint.frontends.onnx import inference

    monkeypatch.setattr(inference, "_disagrees_with_runtime", lambda *args: True)
    [walked] = capture_file(LIGHT / name, Options())
    strict = light_captures[name][0].graph
    assert {n: walked.graph.nodes[n]["shapes"] for n in walked.graph} == {n: strict.nodes[n]["shapes"] for n in strict}
