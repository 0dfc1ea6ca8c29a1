"""Fuzzing the ONNX loader: mutated bytes and mutated protos of a small valid model.

Whatever the file holds, ``archlint.api.lint(path)`` returns a report: either analyzed, or with a
one-line ``error``. It never raises, never prints a traceback, and no rule crashes on a graph the
frontend accepted (the API turns a rule crash into an "internal error" note: that is a bug too).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from archlint.api import lint

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def seed_model() -> onnx.ModelProto:
    """A tiny U-Net-ish net touching the ops the frontend normalizes (2 channels: a small file,
    so byte mutations land in structure rather than in weights)."""
    def w(name, *shape):
        return numpy_helper.from_array(np.full(shape, 0.1, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="down", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("ConvTranspose", ["p1", "w2"], ["u1"], name="up", kernel_shape=[4, 4],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["u1", "", "scales"], ["u2"], name="resize", mode="nearest"),
        helper.make_node("Concat", ["u2", "x"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["c3"], name="fuse", kernel_shape=[1, 1]),
        helper.make_node("Add", ["c3", "x"], ["s"], name="skip_add"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "wfc"], ["y"], name="fc", transB=1),
    ]
    inits = [w("w1", 2, 2, 3, 3), w("w2", 2, 2, 4, 4), w("w3", 2, 4, 1, 1), w("wfc", 3, 2),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(nodes, "fuzz_seed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


SEED = seed_model()
SEED_BYTES = SEED.SerializeToString()


#: seconds one lint of a ~1 KB model may take; more is a hang (turned into a failure, not a stall)
LINT_SECONDS = 10


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise TimeoutError(f"lint took more than {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expire)
    # keep firing: the API turns an exception inside a rule into a note and runs the next rule
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_survives(path) -> None:
    with time_limit(LINT_SECONDS):
        report = lint(path)  # must not raise
    assert report.models, "no report at all"
    for m in report.models:
        if m.error is not None:
            assert m.error.strip() and "\n" not in m.error.strip(), repr(m.error)
            assert "Traceback" not in m.error
        assert "internal error" not in (m.error or ""), (m.error, m.notes)
        assert not [n for n in m.notes if "internal error" in n], m.notes


def test_seed_model_is_clean_and_analyzed(tmp_path):
    onnx.checker.check_model(SEED, full_check=True)
    path = tmp_path / "seed.onnx"
    path.write_bytes(SEED_BYTES)
    (m,) = lint(path).models
    assert m.error is None, m.error
    shapes = {n: m.graph.nodes[n]["shapes"][0] for n in m.graph}
    assert shapes["pool"] == (1, 2, 4, 4)
    assert shapes["cat"] == (1, 4, 16, 16)


# --------------------------------------------------------------------------------------------
# byte-level mutations

flip = st.tuples(st.just("flip"), st.integers(0, len(SEED_BYTES) - 1), st.integers(1, 255))
truncate = st.tuples(st.just("truncate"), st.integers(0, len(SEED_BYTES) - 1), st.just(0))
splice = st.tuples(st.just("splice"), st.integers(0, len(SEED_BYTES)), st.binary(min_size=1, max_size=16))
repeat = st.tuples(st.just("repeat"), st.integers(0, len(SEED_BYTES) - 1), st.integers(1, 64))


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in edits:
        pos = min(pos, len(buf))
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= arg
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "splice":
            buf[pos:pos] = arg
        elif kind == "repeat":
            buf[pos:pos] = buf[pos:pos + arg]
    return bytes(buf)


@FUZZ
@given(edits=st.lists(st.one_of(flip, flip, flip, truncate, splice, repeat), min_size=1, max_size=4))
def test_mutated_bytes_never_crash(edits, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "mutated.onnx"
    path.write_bytes(mutate(SEED_BYTES, edits))
    assert_survives(path)


# --------------------------------------------------------------------------------------------
# proto-level mutations: a valid protobuf with hostile values

hostile_int = st.sampled_from([0, -1, -7, 1, 2, 3, 17, 2**31 - 1, 2**40, -(2**31)])
ATTRIBUTES = ["kernel_shape", "strides", "pads", "dilations", "output_padding", "axis", "group",
              "ceil_mode", "output_shape", "transB"]


@st.composite
def proto_edits(draw):
    kind = draw(st.sampled_from(["attr", "dim", "drop_input", "rename_input", "drop_init",
                                 "dims_init", "op_type"]))
    node = draw(st.integers(0, len(SEED.graph.node) - 1))
    return kind, node, draw(st.sampled_from(ATTRIBUTES)), draw(st.lists(hostile_int, min_size=1, max_size=5))


def apply_proto_edit(model: onnx.ModelProto, edit) -> None:
    kind, index, attr, values = edit
    node = model.graph.node[index]
    if kind == "attr":
        for a in list(node.attribute):
            if a.name == attr:
                node.attribute.remove(a)
        scalar = attr in ("axis", "group", "ceil_mode", "transB")
        node.attribute.append(helper.make_attribute(attr, values[0] if scalar else values))
    elif kind == "dim":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[values[0] % len(dims)].dim_value = values[-1]
    elif kind == "drop_input" and node.input:
        del node.input[values[0] % len(node.input)]
    elif kind == "rename_input" and node.input:
        node.input[values[0] % len(node.input)] = node.output[0]  # a self-loop
    elif kind == "drop_init":
        del model.graph.initializer[values[0] % len(model.graph.initializer)]
    elif kind == "dims_init":
        init = model.graph.initializer[values[0] % len(model.graph.initializer)]
        del init.dims[:]
        init.dims.extend(values)
    elif kind == "op_type":
        node.op_type = ["Conv", "MaxPool", "Resize", "Concat", "Gemm", "Flatten", "Nope"][values[0] % 7]


@FUZZ
@given(edits=st.lists(proto_edits(), min_size=1, max_size=3))
def test_mutated_protos_never_crash(edits, tmp_path_factory):
    model = onnx.ModelProto()
    model.CopyFrom(SEED)
    for edit in edits:
        apply_proto_edit(model, edit)
    path = tmp_path_factory.mktemp("fuzz_proto") / "mutated.onnx"
    path.write_bytes(model.SerializeToString())
    assert_survives(path)


def with_input_dims(*dims: int) -> bytes:
    model = onnx.ModelProto()
    model.CopyFrom(SEED)
    for d, value in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
        d.dim_value = value
    return model.SerializeToString()


@pytest.mark.parametrize("make", [
    lambda: b"",
    lambda: b"\x08",  # a lone ir_version tag
    lambda: SEED_BYTES[: len(SEED_BYTES) // 2],
    lambda: b"\x0a\xff\xff\xff\xff\x0f" + SEED_BYTES,  # an absurd length prefix
    lambda: SEED_BYTES + SEED_BYTES,  # two models back to back parse as one with merged fields
    lambda: with_input_dims(1, 2, 16, 2**40),  # found by the fuzzer: a rule looped over every column
    lambda: with_input_dims(1, 2, 0, 16),  # found by the fuzzer: a rule divided by the empty axis
    lambda: with_input_dims(1, 2, -5, 16),
], ids=["empty", "tag-only", "half", "huge-length", "doubled", "width-2**40", "height-0",
        "height-negative"])
def test_interesting_inputs(make, tmp_path):
    path = tmp_path / "case.onnx"
    path.write_bytes(make())
    assert_survives(path)
