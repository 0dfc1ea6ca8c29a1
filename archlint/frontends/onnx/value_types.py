"""Types and shapes read from a model's value infos and initializers: what shape inference wrote."""

from __future__ import annotations

import onnx
from onnx import helper


def _types_of(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    g = model.graph
    types: dict[str, onnx.TypeProto] = {}
    for t in g.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.HasField("tensor_type") and (v.name not in types or v.type.tensor_type.HasField("shape")):
            types[v.name] = v.type
    return types


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """``_shapes_of(_types_of(model))`` without building a TypeProto per initializer or the
    types map (one pass over the value infos of a large graph)."""
    g = model.graph
    shared: dict[tuple[int | None, ...], tuple[int | None, ...]] = {}
    shapes: dict[str, tuple[int | None, ...]] = {}
    typed: set[str] = set()
    for t in g.initializer:
        d = tuple(t.dims)  # what _dims reads back from make_tensor_type_proto(dtype, dims)
        shapes[t.name] = shared.setdefault(d, d)
        typed.add(t.name)
    # what each distinct type says, read once: a large graph repeats a few types, and its
    # serialized bytes are a cheaper key than reading every dim of every value info
    read: dict[bytes, tuple[bool, bool, tuple[int | None, ...] | None]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        key = v.type.SerializeToString()
        known = read.get(key)
        if known is None:
            vt = v.type
            tensor = vt.HasField("tensor_type")
            d = _dims(vt)
            known = read[key] = (tensor, tensor and vt.tensor_type.HasField("shape"),
                                 None if d is None else shared.setdefault(d, d))
        tensor, has_shape, d = known
        if not tensor:
            continue
        name = v.name  # read once: upb makes a new str on every read
        if name in typed:
            if not has_shape:
                continue  # _types_of keeps the earlier type
        else:
            typed.add(name)
        if d is None:
            shapes.pop(name, None)
        else:
            shapes[name] = d
    return shapes


def _shapes_of(types: dict[str, onnx.TypeProto]) -> dict[str, tuple[int | None, ...]]:
    # one tuple per distinct shape: a large graph repeats a few, and the IR nodes share them
    shared: dict[tuple[int | None, ...], tuple[int | None, ...]] = {}
    out = {}
    for k, t in types.items():
        d = _dims(t)
        if d is not None:
            out[k] = shared.setdefault(d, d)
    return out


def _dims(t: onnx.TypeProto) -> tuple[int | None, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    # a nonzero dim_value is set; only a zero needs HasField (this runs once per tensor)
    return tuple([d.dim_value or (0 if d.HasField("dim_value") else None)
                  for d in t.tensor_type.shape.dim])
