"""Shape inference: the example input, ONNX strict inference with a node-by-node fallback (the
static values it reads: ``static_values``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from archlint.config import Options
from archlint.frontends import TargetError
from archlint.frontends.onnx.geometry import (
    RUNTIME_CORRECTED,
    _concrete,
    _one_line,
    _shape_text,
    runtime_spatial,
)
from archlint.frontends.onnx.node_table import NodeTable
from archlint.frontends.onnx.static_values import (
    SHAPE_READERS,
    _materializable,
    _StaticValues,
)
from archlint.frontends.onnx.value_types import (
    _dims,
    _inferred_shapes,
    _shapes_of,
    _types_of,
)

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})



def _input_shapes(
    graph: onnx.GraphProto, options: Options, notes: list[str]
) -> tuple[list[onnx.ValueInfoProto], dict[str, tuple[int | str | None, ...]], bool]:
    """The real (non-initializer) inputs and the shape each gets; True if the batch was assumed."""
    weights = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    real = [i for i in graph.input if i.name not in weights]
    if not real:
        raise TargetError("the graph has no inputs: every graph input is an initializer")
    given = list(options.input_shapes or ())
    if len(given) > len(real):
        raise TargetError(
            f"{len(given)} input shapes given, but the model has {len(real)} input(s): "
            + ", ".join(i.name for i in real)
        )
    shapes: dict[str, tuple[int | str | None, ...]] = {}
    assumed = False
    for index, value in enumerate(real):
        declared = _declared_shape(value)
        if index < len(given):
            shape: tuple[int | str | None, ...] = tuple(given[index])
            if declared is not None and len(declared) != len(shape):
                raise TargetError(
                    f"input shape {'x'.join(map(str, shape))} has rank {len(shape)}, but input "
                    f"{value.name!r} has rank {len(declared)}"
                )
        elif declared is None:
            raise TargetError(
                f"input {value.name!r} declares no shape; pass --input-shape"
            )
        else:
            shape = declared
            if any(isinstance(d, int) and d <= 0 for d in shape):
                # an empty or negative dimension: nothing downstream has a size to reason about
                raise TargetError(
                    f"input {value.name!r} declares shape {_shape_text(shape)} with a dimension "
                    "<= 0; pass --input-shape"
                )
            if shape and not isinstance(shape[0], int):
                shape = (1, *shape[1:])
                assumed = True
                notes.append(
                    f"input {value.name!r}: batch dimension {declared[0] or '?'!s} is symbolic; "
                    "assumed 1 (pass --input-shape to choose)"
                )
            symbolic = [str(d) if d else "?" for d in shape if not isinstance(d, int)]
            if symbolic:
                example = _assumed_example(graph, value.name, shape)
                if example is None:  # never a clean report over unknown shapes
                    raise TargetError(
                        f"input {value.name!r} has symbolic dimensions ({', '.join(symbolic)}) "
                        "and its first layer does not say which sizes it takes; pass "
                        "--input-shape"
                    )
                else:
                    shape, assumed = example, True
                    notes.append(
                        f"input {value.name!r} has symbolic dimensions ({', '.join(symbolic)}); "
                        f"assumed {_shape_text(shape)} (pass --input-shape to choose)"
                    )
        shapes[value.name] = shape
    return real, shapes, assumed


#: the spatial size tried for a symbolic dim: the common ImageNet size, which every stride up to
#: 32 and the usual patch sizes (14, 16, 32 via 224 = 14 * 16) divide.
ASSUMED_SPATIAL = 224


def _assumed_example(
    graph: onnx.GraphProto, name: str, shape: tuple[int | str | None, ...]
) -> tuple[int, ...] | None:
    """An example for symbolic dims: declared dims kept, channels from the first Conv's weight,
    spatial dims ASSUMED_SPATIAL when the first windowed layer's kernel fits in it."""
    if len(shape) < 3:
        return None
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    first = next((n for n in graph.node if name in n.input), None)
    kernel: tuple[int, ...] = ()
    channels = None
    if first is not None and first.op_type in ("Conv", "ConvTranspose") and len(first.input) > 1:
        w = weights.get(first.input[1])
        group = next((a.i for a in first.attribute if a.name == "group"), 1)
        if w is not None and len(w) == len(shape):
            channels = w[1] * group if first.op_type == "Conv" else w[0]
            kernel = w[2:]
    out = [shape[0] if isinstance(shape[0], int) else 1]
    if isinstance(shape[1], int):
        out.append(shape[1])
    elif channels is not None:
        out.append(int(channels))
    else:
        return None
    for i, d in enumerate(shape[2:]):
        if isinstance(d, int):
            out.append(d)
        elif i < len(kernel) and kernel[i] > ASSUMED_SPATIAL:
            return None
        else:
            out.append(ASSUMED_SPATIAL)
    return tuple(out)


def _declared_shape(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    )


# ---------------------------------------------------------------------------------------------
# shape inference


@dataclass
class _Tensors:
    """What inference knows about every tensor."""

    #: tensor -> dims (int, or None for an unknown/symbolic dim); absent when not even the rank is known.
    shapes: dict[str, tuple[int | None, ...]]
    #: tensor -> the one-line reason it could not be computed (set only where strict inference failed).
    failed: dict[str, str] = field(default_factory=dict)
    #: ONNX node index -> its failure reason.
    node_errors: dict[int, str] = field(default_factory=dict)
    types: dict[str, onnx.TypeProto] = field(default_factory=dict)
    static: "_StaticValues | None" = None


def _inference_model(
    model: onnx.ModelProto,
    nodes: list[tuple[int, onnx.NodeProto]] | None,
    input_shapes: dict[str, tuple[int | str | None, ...]],
) -> onnx.ModelProto:
    """A data-light copy for inference: sorted nodes, the chosen input shapes, and big or
    external initializers turned into declared inputs (so their bytes are never copied).
    ``nodes=None``: everything but the nodes (see ``NodeTable.serialized_with``)."""
    graph = model.graph
    inputs = []
    for value in graph.input:
        if value.name in input_shapes:
            inputs.append(_with_shape(value, input_shapes[value.name]))
    initializers = []
    for tensor in graph.initializer:
        if _materializable(tensor):
            initializers.append(tensor)
        else:
            inputs.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    for sparse in graph.sparse_initializer:
        inputs.append(
            helper.make_tensor_value_info(sparse.values.name, sparse.values.data_type, list(sparse.dims))
        )
    light = helper.make_graph(
        [n for _, n in nodes] if nodes is not None else [], graph.name or "model", inputs, list(graph.output), initializers,
        value_info=list(graph.value_info),
    )
    out = helper.make_model(light, opset_imports=list(model.opset_import), functions=list(model.functions))
    out.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
    return out


def _with_shape(value: onnx.ValueInfoProto, shape: tuple[int | str | None, ...]) -> onnx.ValueInfoProto:
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    dims = [d if isinstance(d, (int, str)) else None for d in shape]
    return helper.make_tensor_value_info(value.name, elem or onnx.TensorProto.FLOAT, dims)


def _activation_tensors(table: NodeTable, real_inputs: list[str]) -> set[str]:
    """Tensors computed from a real graph input (not through Shape/Size): the IR's data."""
    activations = set(real_inputs)
    empty_is_input = "" in activations
    for _, op_type, inputs, outputs in table.rows():
        if not activations.isdisjoint(inputs) and op_type not in SHAPE_READERS:
            activations.update(outputs)
            if not empty_is_input:
                activations.discard("")  # an omitted optional output is no tensor
    return activations


def _infer_tensors(
    model: onnx.ModelProto,
    table: NodeTable,
    activations: set[str],
    notes: list[str],
) -> _Tensors:
    """Strict ONNX inference; where it fails, or where it disagrees with what runtimes compute,
    a node-by-node walk (ONNX's per-node inference plus :func:`runtime_spatial`) instead.
    ``model`` is the inference model without its nodes; the table's are added to its bytes."""
    strict_error = None
    try:
        inferred = shape_inference.infer_shapes(table.serialized_with(model), strict_mode=True, data_prop=True)
    except Exception as exc:
        strict_error = _one_line(exc)
    if strict_error is None:  # only the node-by-node walk below reads types
        tensors = _Tensors(shapes=_inferred_shapes(inferred))
        tensors.static = _StaticValues(model, table, tensors, activations)
        if not _disagrees_with_runtime(table, tensors) and not _has_gaps(model, table, tensors):
            return tensors
    types = _types_of(model)
    tensors = _Tensors(shapes=_shapes_of(types), types=types)
    tensors.static = _StaticValues(model, table, tensors, activations)
    _propagate(model, table, tensors)
    if strict_error is not None and not tensors.node_errors:
        notes.append(f"strict ONNX shape inference failed ({strict_error})")
    return tensors


def _disagrees_with_runtime(table: NodeTable, tensors: _Tensors) -> bool:
    for i in [i for i, op_type in enumerate(table.op_type) if op_type in RUNTIME_CORRECTED]:
        node = table.protos[i]
        expected = runtime_spatial(node, tensors.shapes.get(node.input[0]), _weight_shape(node, tensors))
        out = tensors.shapes.get(node.output[0])
        if expected is not None and out is not None and tuple(out[2:]) != expected:
            return True
    return False


def _has_gaps(model: onnx.ModelProto, table: NodeTable, tensors: _Tensors) -> bool:
    """A known op with concrete inputs whose output ONNX left unknown (typically a Resize whose
    sizes are arithmetic on a runtime shape that data propagation cannot follow, or a class
    token's Expand to a shape built by ConstantOfShape/Where, which would leave the token
    Concat one short)."""
    opsets = {o.domain: o.version for o in model.opset_import}
    local_functions = {(f.domain, f.name) for f in model.functions}
    shapes = tensors.shapes
    concrete: dict[tuple[int | None, ...] | None, bool] = {}  # shapes are shared tuples: few distinct

    def known(tensor: str) -> bool:
        shape = shapes.get(tensor)
        found = concrete.get(shape)
        if found is None:
            found = concrete[shape] = _concrete(shape)
        return found

    firsts = [outputs[0] if outputs else "" for outputs in table.outputs]
    if all(map(_concrete, set(shapes.values()))):
        # every shape inference wrote is concrete: only an output it left out can be a gap
        candidates = [i for i, out in enumerate(firsts) if out and out not in shapes]
    else:
        candidates = [i for i, out in enumerate(firsts) if out and not known(out)]
    inputs = table.inputs
    for i in candidates:
        if all(known(t) for t in inputs[i] if t) and _schema(table.protos[i], opsets, local_functions):
            return True
    return False


def _weight_shape(node: onnx.NodeProto, tensors: _Tensors) -> tuple[int | None, ...] | None:
    return tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None


def _propagate(model: onnx.ModelProto, table: NodeTable, tensors: _Tensors) -> None:
    """Infer node by node, in order, so a failure lands on the node that caused it (with ONNX's
    reason) and everything that does not depend on it keeps its shape.

    ONNX's per-node inference is asked once per distinct (op, attributes, input types, static
    input values): the layers of a large graph repeat a few of these."""
    opsets = {o.domain: o.version for o in model.opset_import}
    local_functions = {(f.domain, f.name) for f in model.functions}
    opset_imports = list(model.opset_import)
    types, shapes, failed, static = tensors.types, tensors.shapes, tensors.failed, tensors.static
    schemas: dict[tuple[str, str], object] = {}
    #: key -> the output types by output position, with their dims (successes only: a failure's
    #: reason names its node)
    inferred: dict[tuple, list[tuple[int, onnx.TypeProto, tuple[int | None, ...]]]] = {}
    for i, index, node in zip(range(len(table)), table.index, table.protos):
        ins, outs = table.inputs[i], table.outputs[i]
        outputs = [o for o in outs if o]
        bad_inputs = [t for t in ins if t in failed] if failed else None
        if bad_inputs:
            for o in outputs:
                failed[o] = failed[bad_inputs[0]]
            continue
        op = (table.domain[i], table.op_type[i])
        schema = schemas[op] if op in schemas else schemas.setdefault(op, _schema(node, opsets, local_functions))
        if schema is None or any(t and t not in types for t in ins):
            continue  # an op ONNX does not know, or an unknown input: unknown, not failed
        input_data = {}
        key: list | None = [op, table.attr_key[i], tuple([bool(o) for o in outs])]
        if len(set(outputs)) != len(outputs) or table.may_hold_graphs(i):
            key = None  # a repeated output name, or a subgraph: per node
        for t in ins:
            value = static.value(t) if t else None
            if value is not None:
                input_data[t] = numpy_helper.from_array(np.asarray(value), t)
            if key is not None:
                if not t:
                    key.append("")
                elif value is None:
                    key.append(types[t].SerializeToString())
                elif value.dtype.kind in "biufc":
                    key.append((types[t].SerializeToString(), value.dtype.str, value.shape, value.tobytes()))
                else:
                    key = None  # strings, objects: no exact bytes key
        known = inferred.get(tuple(key)) if key is not None else None
        if known is None:
            try:
                out_types = shape_inference.infer_node_outputs(
                    schema, node, {t: types[t] for t in ins if t}, input_data, opset_imports=opset_imports
                )
            except Exception as exc:
                if any(a.HasField("g") or a.graphs for a in node.attribute):
                    continue  # subgraph bodies read outer names this per-node call cannot see
                reason = _failure_reason(node, exc, tensors)
                tensors.node_errors[index] = reason
                for o in outputs:
                    failed[o] = reason
                continue
            if not all(o in outs for o in out_types):  # a name the node does not write
                for o, t in out_types.items():
                    if _dims(t) is not None:
                        types[o] = t
                        shapes[o] = _dims(t)
                known = []
            else:
                known = [(outs.index(o), t, d) for o, t in out_types.items() if (d := _dims(t)) is not None]
                if key is not None:
                    inferred[tuple(key)] = known
        for position, t, d in known:
            types[outs[position]] = t
            shapes[outs[position]] = d
        if node.op_type in RUNTIME_CORRECTED and outs[0] in shapes:
            expected = runtime_spatial(node, shapes.get(ins[0]), _weight_shape(node, tensors))
            if expected is not None:
                out = shapes[outs[0]]
                fixed = (*out[:2], *expected)
                shapes[outs[0]] = fixed
                types[outs[0]] = helper.make_tensor_type_proto(types[outs[0]].tensor_type.elem_type, list(fixed))


def _schema(node: onnx.NodeProto, opsets: dict[str, int], local_functions: set[tuple[str, str]]):
    if (node.domain, node.op_type) in local_functions:
        return None
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = opsets.get(domain, opsets.get("ai.onnx", 1) if domain == "" else None)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:
        return None


def _failure_reason(node: onnx.NodeProto, exc: Exception, tensors: _Tensors) -> str:
    message = _one_line(exc)
    for prefix in ("[ShapeInferenceError] ", "[TypeInferenceError] "):
        message = message.replace(prefix, "")
    operands = [_shape_text(tensors.shapes.get(t)) for t in node.input if t]
    return f"{message} (input shapes {', '.join(operands)})" if operands else message
