"""The ONNX frontend: an ``.onnx`` file (or a ``ModelProto``) -> the IR graph.

It never imports torch. Shapes come from ONNX's own strict shape inference (with data
propagation, because the model zoo builds its weights with ``ConstantOfShape``); where strict
inference fails, a node-by-node pass finds the failing node, records its one-line reason there and
keeps everything upstream.

What becomes an IR node: every ONNX node that reads at least one *activation* (a tensor derived
from a real graph input). Initializers, ``Constant`` nodes and everything computed only from them
or from ``Shape``/``Size`` are *static*: weights and shape arithmetic, resolved here into attrs
(a Reshape target, Pad amounts, Resize scales) and never IR nodes.

Safety: the model is loaded with ``load_external_data=False`` and no external-data reference is
ever followed; only small, embedded tensors are turned into numpy arrays, so a tensor that declares
2 GB is never allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import networkx as nx
import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from archlint.config import Options
from archlint.frontends import Capture, TargetError
from archlint.graph import Attrs, Location, add_op, new_graph

__all__ = ["capture_file", "capture_model"]

#: Static tensors with more elements than this are never materialized (weights, not shapes).
MAX_STATIC_ELEMENTS = 4096

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
#: ONNX ``ends`` values meaning "to the end of the axis" (INT_MAX / INT64_MAX and friends).
_SLICE_TO_END = 2**31 - 1

POINTWISE_OPS = frozenset(
    """Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Gelu Mish Softplus
    Softsign ThresholdedRelu Swish Erf Exp Log Sqrt Reciprocal Neg Abs Sign Floor Ceil Round Sin
    Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Not IsNaN IsInf Dropout Identity Softmax
    LogSoftmax Hardmax Clip Cast CastLike Shrink QuantizeLinear DequantizeLinear""".split()
)
NORM_OPS = frozenset(
    """BatchNormalization LRN InstanceNormalization LayerNormalization GroupNormalization
    MeanVarianceNormalization LpNormalization RMSNormalization""".split()
)
#: Elementwise ops: a merge when two or more operands are activations, else pointwise.
ARITHMETIC_MERGES = {"Add": "add", "Sum": "add", "Mean": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
ELEMENTWISE_OTHER = frozenset("Pow Max Min Mod Where And Or Xor Equal Less Greater BitShift".split())
POOLS = {"MaxPool": "max_pool", "AveragePool": "avg_pool", "LpPool": "lp_pool"}
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
SPATIAL_REDUCES = {"ReduceMean": "mean", "ReduceMax": "max", "ReduceL2": "l2", "ReduceSum": "sum"}
#: Ops that turn an activation into a static (shape) value.
SHAPE_READERS = frozenset({"Shape", "Size"})
_PAD_MODES = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


# ---------------------------------------------------------------------------------------------
# entry points


def capture_file(path: Path, options: Options) -> list[Capture]:
    """Load ``path`` (never its external data) and capture its one graph.

    Raises :class:`TargetError` with a one-line reason for a file that is not a usable model.
    """
    path = Path(path)
    model = _load(path)
    return [_capture(model, options, name=path.stem, file=str(path))]


def capture_model(model: onnx.ModelProto, options: Options) -> Capture:
    """Capture an in-memory ``ModelProto``; a model that cannot be analyzed gives ``error``."""
    name = model.graph.name or "model"
    try:
        return _capture(model, options, name=name, file=None)
    except TargetError as exc:
        return Capture(name=name, graph=None, error=str(exc))


def _load(path: Path) -> onnx.ModelProto:
    from google.protobuf.message import DecodeError

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise TargetError(f"{path}: empty file, not an ONNX model")
    try:
        return onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise TargetError(
            f"{path}: not a valid ONNX model (the protobuf is corrupt or truncated)"
        ) from None
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # onnx raises assorted types for unreadable formats
        raise TargetError(f"{path}: cannot load ONNX model: {_one_line(exc)}") from None


def _capture(model: onnx.ModelProto, options: Options, *, name: str, file: str | None) -> Capture:
    try:
        return _capture_checked(model, options, name=name, file=file)
    except TargetError:
        raise
    except Exception as exc:  # a malformed proto must give one line, never a traceback
        raise TargetError(
            f"cannot build a graph from this ONNX model ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _capture_checked(model: onnx.ModelProto, options: Options, *, name: str, file: str | None) -> Capture:
    _check_header(model)
    nodes = _sorted_nodes(model.graph)
    notes: list[str] = []
    real_inputs, input_shapes, assumed = _input_shapes(model.graph, options, notes)
    inference_model = _inference_model(model, nodes, input_shapes)
    activations = _activation_tensors(nodes, [i.name for i in real_inputs])
    tensors = _infer_tensors(inference_model, nodes, activations, notes)
    builder = _GraphBuilder(model, nodes, tensors, name=name, file=file, notes=notes)
    g = builder.build(real_inputs)
    g.graph["input_shapes"] = [s for s in input_shapes.values() if _concrete(s)]
    g.graph["input_assumed"] = assumed
    return Capture(name=name, graph=g, notes=notes)


# ---------------------------------------------------------------------------------------------
# validation: header, topology, inputs


def _check_header(model: onnx.ModelProto) -> None:
    if not model.HasField("graph") or (not model.graph.node and not model.graph.input):
        raise TargetError("not an ONNX model: it has no graph")
    if model.ir_version > onnx.IR_VERSION:
        raise TargetError(
            f"model IR version {model.ir_version} is newer than this onnx supports "
            f"({onnx.IR_VERSION}); upgrade the onnx package"
        )
    default = [o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS]
    if not default and model.ir_version >= 3:
        raise TargetError("model declares no ai.onnx opset (opset_import is empty)")
    newest = onnx.defs.onnx_opset_version()
    if default and max(default) > newest:
        raise TargetError(
            f"model needs ai.onnx opset {max(default)}, but the installed onnx knows up to "
            f"opset {newest}; upgrade the onnx package"
        )
    if default and min(default) < 1:
        raise TargetError(f"model declares an invalid ai.onnx opset {min(default)}")


def _sorted_nodes(graph: onnx.GraphProto) -> list[tuple[int, onnx.NodeProto]]:
    """(original index, node) in a topological order; TargetError on a cycle or a dangling read."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    available |= {t.values.name for t in graph.sparse_initializer}
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = index
    if _in_file_order(graph, producer, available):  # what ONNX requires: skip the sort
        return list(enumerate(graph.node))
    deps = nx.DiGraph()
    deps.add_nodes_from(range(len(graph.node)))
    for index, node in enumerate(graph.node):
        for tensor in _node_reads(node):
            if tensor in producer:
                deps.add_edge(producer[tensor], index)
            elif tensor not in available:
                raise TargetError(
                    f"node {_node_label(node, index)} reads {tensor!r}, which no node, graph "
                    "input or initializer provides (missing graph input?)"
                )
    for out in graph.output:
        if out.name not in producer and out.name not in available:
            raise TargetError(f"graph output {out.name!r} is produced by no node")
    if not nx.is_directed_acyclic_graph(deps):
        cycle = nx.find_cycle(deps)
        names = [_node_label(graph.node[a], a) for a, _ in cycle]
        raise TargetError(f"the graph has a cycle: {' -> '.join(names + names[:1])}")
    order = nx.lexicographical_topological_sort(deps)
    return [(i, graph.node[i]) for i in order]


def _in_file_order(graph: onnx.GraphProto, producer: dict[str, int], available: set[str]) -> bool:
    """True when the file's node order is already topological, no read dangles and every graph
    output is provided: then the lexicographic topological sort would return the file order."""
    for index, node in enumerate(graph.node):
        for tensor in _node_reads(node):
            source = producer.get(tensor)
            if source is None:
                if tensor not in available:
                    return False
            elif source >= index:
                return False
    return all(out.name in producer or out.name in available for out in graph.output)


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, including outer-scope names used inside its subgraphs."""
    reads = [t for t in node.input if t]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            reads.extend(_outer_reads(sub))
    return reads


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    return [t for n in graph.node for t in _node_reads(n) if t not in local]


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
                notes.append(
                    f"input {value.name!r} has symbolic dimensions ({', '.join(symbolic)}); "
                    "shapes stay unknown until you pass --input-shape"
                )
        shapes[value.name] = shape
    return real, shapes, assumed


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
    nodes: list[tuple[int, onnx.NodeProto]],
    input_shapes: dict[str, tuple[int | str | None, ...]],
) -> onnx.ModelProto:
    """A data-light copy for inference: sorted nodes, the chosen input shapes, and big or
    external initializers turned into declared inputs (so their bytes are never copied)."""
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
        [n for _, n in nodes], graph.name or "model", inputs, list(graph.output), initializers,
        value_info=list(graph.value_info),
    )
    out = helper.make_model(light, opset_imports=list(model.opset_import), functions=list(model.functions))
    out.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
    return out


def _with_shape(value: onnx.ValueInfoProto, shape: tuple[int | str | None, ...]) -> onnx.ValueInfoProto:
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    dims = [d if isinstance(d, (int, str)) else None for d in shape]
    return helper.make_tensor_value_info(value.name, elem or onnx.TensorProto.FLOAT, dims)


def _materializable(tensor: onnx.TensorProto) -> bool:
    """Embedded and small: safe to turn into numpy (never follows external data)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        return False
    return math.prod(tensor.dims) <= MAX_STATIC_ELEMENTS


def _activation_tensors(nodes: list[tuple[int, onnx.NodeProto]], real_inputs: list[str]) -> set[str]:
    """Tensors computed from a real graph input (not through Shape/Size): the IR's data."""
    activations = set(real_inputs)
    for _, node in nodes:
        if node.op_type not in SHAPE_READERS and any(t in activations for t in node.input):
            activations.update(o for o in node.output if o)
    return activations


def _infer_tensors(
    model: onnx.ModelProto,
    nodes: list[tuple[int, onnx.NodeProto]],
    activations: set[str],
    notes: list[str],
) -> _Tensors:
    """Strict ONNX inference; where it fails, or where it disagrees with what runtimes compute,
    a node-by-node walk (ONNX's per-node inference plus :func:`runtime_spatial`) instead."""
    strict_error = None
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        strict_error = _one_line(exc)
    if strict_error is None:
        types = _types_of(inferred)
        tensors = _Tensors(shapes=_shapes_of(types), types=types)
        tensors.static = _StaticValues(model, nodes, tensors, activations)
        if not _disagrees_with_runtime(nodes, tensors) and not _has_gaps(model, nodes, tensors, activations):
            return tensors
    types = _types_of(model)
    tensors = _Tensors(shapes=_shapes_of(types), types=types)
    tensors.static = _StaticValues(model, nodes, tensors, activations)
    _propagate(model, nodes, tensors)
    if strict_error is not None and not tensors.node_errors:
        notes.append(f"strict ONNX shape inference failed ({strict_error})")
    return tensors


def _types_of(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    g = model.graph
    types: dict[str, onnx.TypeProto] = {}
    for t in g.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    for v in [*g.input, *g.value_info, *g.output]:
        if v.type.HasField("tensor_type") and (v.name not in types or v.type.tensor_type.HasField("shape")):
            types[v.name] = v.type
    return types


def _shapes_of(types: dict[str, onnx.TypeProto]) -> dict[str, tuple[int | None, ...]]:
    return {k: d for k, d in ((k, _dims(t)) for k, t in types.items()) if d is not None}


def _dims(t: onnx.TypeProto) -> tuple[int | None, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)


def _disagrees_with_runtime(nodes: list[tuple[int, onnx.NodeProto]], tensors: _Tensors) -> bool:
    for _, node in nodes:
        if node.op_type not in RUNTIME_CORRECTED:
            continue
        expected = runtime_spatial(node, tensors.shapes.get(node.input[0]), _weight_shape(node, tensors))
        out = tensors.shapes.get(node.output[0])
        if expected is not None and out is not None and tuple(out[2:]) != expected:
            return True
    return False


def _has_gaps(
    model: onnx.ModelProto, nodes: list[tuple[int, onnx.NodeProto]], tensors: _Tensors, activations: set[str]
) -> bool:
    """A known op with concrete inputs whose activation output ONNX left unknown (typically a
    Resize whose sizes are arithmetic on a runtime shape that data propagation cannot follow)."""
    opsets = {o.domain: o.version for o in model.opset_import}
    local_functions = {(f.domain, f.name) for f in model.functions}
    for _, node in nodes:
        out = node.output[0] if node.output else ""
        if out not in activations or _concrete(tensors.shapes.get(out)):
            continue
        if all(_concrete(tensors.shapes.get(t)) for t in node.input if t) and _schema(node, opsets, local_functions):
            return True
    return False


def _weight_shape(node: onnx.NodeProto, tensors: _Tensors) -> tuple[int | None, ...] | None:
    return tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None


def _propagate(model: onnx.ModelProto, nodes: list[tuple[int, onnx.NodeProto]], tensors: _Tensors) -> None:
    """Infer node by node, in order, so a failure lands on the node that caused it (with ONNX's
    reason) and everything that does not depend on it keeps its shape."""
    opsets = {o.domain: o.version for o in model.opset_import}
    local_functions = {(f.domain, f.name) for f in model.functions}
    for index, node in nodes:
        outputs = [o for o in node.output if o]
        bad_inputs = [t for t in node.input if t in tensors.failed]
        if bad_inputs:
            for o in outputs:
                tensors.failed[o] = tensors.failed[bad_inputs[0]]
            continue
        schema = _schema(node, opsets, local_functions)
        if schema is None or any(t and t not in tensors.types for t in node.input):
            continue  # an op ONNX does not know, or an unknown input: unknown, not failed
        input_types = {t: tensors.types[t] for t in node.input if t}
        input_data = {}
        for t in node.input:
            value = tensors.static.value(t) if t else None
            if value is not None:
                input_data[t] = numpy_helper.from_array(np.asarray(value), t)
        try:
            out_types = shape_inference.infer_node_outputs(
                schema, node, input_types, input_data, opset_imports=list(model.opset_import)
            )
        except Exception as exc:
            if any(a.HasField("g") or a.graphs for a in node.attribute):
                continue  # subgraph bodies read outer names this per-node call cannot see
            reason = _failure_reason(node, exc, tensors)
            tensors.node_errors[index] = reason
            for o in outputs:
                tensors.failed[o] = reason
            continue
        for o, t in out_types.items():
            if _dims(t) is not None:
                tensors.types[o] = t
                tensors.shapes[o] = _dims(t)
        if node.op_type in RUNTIME_CORRECTED and node.output[0] in tensors.shapes:
            expected = runtime_spatial(node, tensors.shapes.get(node.input[0]), _weight_shape(node, tensors))
            if expected is not None:
                out = tensors.shapes[node.output[0]]
                fixed = (*out[:2], *expected)
                tensors.shapes[node.output[0]] = fixed
                tensors.types[node.output[0]] = helper.make_tensor_type_proto(
                    tensors.types[node.output[0]].tensor_type.elem_type, list(fixed)
                )


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


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(exc).__name__


def _concrete(shape: Iterable[Any] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


# ---------------------------------------------------------------------------------------------
# static values: weights and shape arithmetic, evaluated only when small


class _StaticValues:
    """Values of static tensors (initializers, Constant nodes, shape arithmetic), on demand.

    Uses ``onnx.reference`` for the arithmetic, one node at a time, and refuses anything larger
    than :data:`MAX_STATIC_ELEMENTS`: weights are described by their shapes, never built.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        nodes: list[tuple[int, onnx.NodeProto]],
        tensors: _Tensors,
        activations: set[str],
    ):
        self._activations = activations
        self._opsets = {o.domain: o.version for o in model.opset_import}
        self._initializers = {t.name: t for t in model.graph.initializer}
        self._producer = {o: node for _, node in nodes for o in node.output if o}
        self._tensors = tensors
        self._memo: dict[str, np.ndarray | None] = {}
        self._shape_sources: dict[str, frozenset[str]] = {}

    def value(self, name: str) -> np.ndarray | None:
        if name not in self._memo:
            self._memo[name] = None  # guards against re-entry
            self._memo[name] = self._compute(name)
        return self._memo[name]

    def ints(self, name: str) -> list[int] | None:
        value = self.value(name) if name else None
        if value is None or value.dtype.kind not in "iub":
            return None
        return [int(v) for v in value.reshape(-1)]

    def floats(self, name: str) -> list[float] | None:
        value = self.value(name) if name else None
        if value is None or value.dtype.kind not in "iuf":
            return None
        return [float(v) for v in value.reshape(-1)]

    def producer_of(self, name: str) -> onnx.NodeProto | None:
        return self._producer.get(name)

    def shape_sources(self, name: str) -> frozenset[str]:
        """Tensors whose runtime shape this static value is computed from (via Shape/Size)."""
        if name in self._shape_sources:
            return self._shape_sources[name]
        self._shape_sources[name] = frozenset()
        node = self._producer.get(name)
        if node is None:
            out: frozenset[str] = frozenset()
        elif node.op_type in SHAPE_READERS:
            out = frozenset(node.input[:1])
        else:
            out = frozenset().union(*(self.shape_sources(t) for t in node.input if t))
        self._shape_sources[name] = out
        return out

    def _compute(self, name: str) -> np.ndarray | None:
        if name in self._activations:
            return None
        if name in self._initializers:
            tensor = self._initializers[name]
            return numpy_helper.to_array(tensor) if _materializable(tensor) else None
        node = self._producer.get(name)
        if node is None:
            return None
        shape = self._tensors.shapes.get(name)
        if shape is not None and None not in shape and math.prod(shape) > MAX_STATIC_ELEMENTS:
            return None
        if node.op_type in SHAPE_READERS:
            return self._shape_value(node)
        if node.op_type == "Constant":
            return self._constant(node)
        inputs = [self.value(t) if t else None for t in node.input]
        if any(v is None for t, v in zip(node.input, inputs) if t):
            return None
        known_size = shape is not None and None not in shape
        if not known_size and not _bounded_by_inputs(node, inputs):
            return None  # an output of unknown size could be huge (ConstantOfShape, Expand)
        return self._run(node, name, inputs)

    def _shape_value(self, node: onnx.NodeProto) -> np.ndarray | None:
        dims = self._tensors.shapes.get(node.input[0])
        if dims is None or None in dims:
            return None
        if node.op_type == "Size":
            return np.array(math.prod(dims), dtype=np.int64)
        attrs = _attributes(node)
        start, end = attrs.get("start", 0), attrs.get("end", len(dims))
        return np.array(dims[slice(start, end)], dtype=np.int64)

    def _constant(self, node: onnx.NodeProto) -> np.ndarray | None:
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t) if _materializable(attr.t) else None
            if attr.name in ("value_int", "value_float"):
                return np.array(helper.get_attribute_value(attr))
            if attr.name in ("value_ints", "value_floats"):
                return np.array(list(helper.get_attribute_value(attr)))
        return None

    def _run(self, node: onnx.NodeProto, name: str, inputs: list[np.ndarray | None]) -> np.ndarray | None:
        from onnx.reference import ReferenceEvaluator

        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in self._opsets and not (domain == "" and "ai.onnx" in self._opsets):
            return None
        opset = self._opsets.get(domain, self._opsets.get("ai.onnx"))
        try:
            evaluator = ReferenceEvaluator(node, opsets={domain: opset})
            feeds = {t: v for t, v in zip(node.input, inputs) if t}
            outputs = evaluator.run(None, feeds)
        except Exception:
            return None
        for out, value in zip(node.output, outputs):
            if out == name:
                value = np.asarray(value)
                return value if value.size <= MAX_STATIC_ELEMENTS else None
        return None


#: Ops whose output never has more elements than their largest input.
_NON_EXPANDING = frozenset(
    """Identity Cast Gather Unsqueeze Squeeze Concat Slice Reshape Flatten Transpose Floor Ceil
    Round Neg Abs Sqrt Sign Not ReduceProd ReduceSum ReduceMin ReduceMax ReduceMean""".split()
)
_BINARY = frozenset("Add Sub Mul Div Min Max Equal Less Greater Mod Pow And Or".split())


def _bounded_by_inputs(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> bool:
    if node.op_type == "Concat":
        return sum(v.size for v in inputs if v is not None) <= MAX_STATIC_ELEMENTS
    if node.op_type in _NON_EXPANDING:
        return True
    if node.op_type in _BINARY or node.op_type == "Where":
        sizes = sorted(v.size for v in inputs if v is not None)
        return len(sizes) <= 1 or sizes[-2] <= 1 or len(set(sizes)) == 1
    return False


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        out[attr.name] = value
    return out


# ---------------------------------------------------------------------------------------------
# the IR


class _GraphBuilder:
    def __init__(
        self,
        model: onnx.ModelProto,
        nodes: list[tuple[int, onnx.NodeProto]],
        tensors: _Tensors,
        *,
        name: str,
        file: str | None,
        notes: list[str],
    ):
        self.model = model
        self.nodes = nodes
        self.tensors = tensors
        self.static = tensors.static
        self.file = file
        self.notes = notes
        self.g = new_graph(name, file, "onnx")
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        self.local_functions = {(f.domain, f.name) for f in model.functions}
        #: activation tensor -> IR node that produces it
        self.producer: dict[str, str] = {}
        #: IR nodes whose outputs are unknown past them (custom op, failure)
        self.poisoned: set[str] = set()
        self.used_names: set[str] = set()
        self.unknown_ops: list[str] = []

    # -- naming ------------------------------------------------------------------------------

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.used_names:
            n += 1
            candidate = f"{name}_{n}"
        self.used_names.add(candidate)
        return candidate

    def _location(self, node_name: str) -> Location:
        return Location(file=self.file, line=None, node=node_name)

    # -- build -------------------------------------------------------------------------------

    def build(self, real_inputs: list[onnx.ValueInfoProto]) -> nx.DiGraph:
        node_names = {
            index: (node.name or f"{node.op_type}_{index}") for index, node in self.nodes
        }
        for value in real_inputs:
            ir_name = self._unique(value.name if value.name not in node_names.values() else f"input:{value.name}")
            shape = self.tensors.shapes.get(value.name)
            add_op(
                self.g, ir_name, "input",
                shapes=(shape,) if _concrete(shape) else None,
                location=self._location(value.name), origin="input",
            )
            self.producer[value.name] = ir_name
        for index, node in self.nodes:
            if node.op_type in SHAPE_READERS:
                continue
            activations = [t for t in node.input if t in self.producer]
            if not activations:
                continue  # weights or shape arithmetic
            self._add_node(index, node, node_names[index])
        self._add_outputs()
        unmapped = sorted({
            self.g.nodes[n]["origin"] for n in self.g.nodes
            if self.g.nodes[n]["op"] == "unknown" and "::" not in self.g.nodes[n]["origin"]
        })
        if unmapped:
            self.notes.append(
                f"ONNX op(s) with no archlint kind: {', '.join(unmapped)}; shapes come from ONNX, "
                "the receptive field is unknown past them"
            )
        if self.unknown_ops:
            self.g.graph["capture_note"] = self.unknown_ops[0]
        return self.g

    def _add_outputs(self) -> None:
        outputs = [o.name for o in self.model.graph.output if o.name in self.producer]
        for tensor in outputs:
            src = self.producer[tensor]
            name = self._unique("output" if len(outputs) == 1 else f"output:{tensor}")
            shape = self.tensors.shapes.get(tensor)
            known = src not in self.poisoned and self.g.nodes[src]["shapes"] is not None
            add_op(
                self.g, name, "output", inputs=[src],
                shapes=(shape,) if known and _concrete(shape) else None,
                location=self._location(tensor), origin="output",
            )

    def _add_node(self, index: int, node: onnx.NodeProto, onnx_name: str) -> None:
        ir_name = self._unique(onnx_name)
        inputs = [self.producer[t] for t in node.input if t in self.producer]
        custom = self._is_custom(node)
        if custom:
            op, attrs = "unknown", Attrs()
            origin = f"{node.domain or 'ai.onnx'}::{node.op_type}"
            self.unknown_ops.append(
                f"unknown op {origin} at node {onnx_name!r}: its output shapes and receptive "
                "field are unknown past it"
            )
            self.notes.append(self.unknown_ops[-1])
        else:
            origin = node.op_type
            try:
                op, attrs = self._normalize(node)
            except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
                op, attrs = "unknown", Attrs(extra={"normalize_error": _one_line(exc)})
        shapes, error = self._shapes(index, node, inputs, op, attrs, custom)
        add_op(
            self.g, ir_name, op, inputs=inputs, attrs=attrs, shapes=shapes,
            location=self._location(onnx_name), origin=origin, error=error,
        )
        if custom or error is not None or any(p in self.poisoned for p in inputs):
            self.poisoned.add(ir_name)
        for out in node.output:
            if out:
                self.producer[out] = ir_name

    def _is_custom(self, node: onnx.NodeProto) -> bool:
        if (node.domain, node.op_type) in self.local_functions:
            return False
        domain = "" if node.domain == "ai.onnx" else node.domain
        return not onnx.defs.has(node.op_type, domain)

    # -- shapes ------------------------------------------------------------------------------

    def _shapes(
        self, index: int, node: onnx.NodeProto, inputs: list[str], op: str, attrs: Attrs, custom: bool
    ) -> tuple[tuple[tuple[int, ...], ...] | None, str | None]:
        if custom or any(p in self.poisoned for p in inputs):
            return None, None
        error = self.tensors.node_errors.get(index)
        if error is None:
            error = self._static_input_failure(node)
        if error is not None:
            return None, error
        shapes = []
        for out in node.output:
            if not out:
                continue
            shape = self.tensors.shapes.get(out)
            if not _concrete(shape):
                break
            shapes.append(shape)
        if shapes:
            in_shapes = [self.tensors.shapes.get(t) for t in node.input if t in self.producer]
            error = _consistency_error(op, attrs, in_shapes, shapes[0])
            return (None, error) if error else (tuple(shapes), None)
        return self._formula_shape(node, inputs, op, attrs)

    def _static_input_failure(self, node: onnx.NodeProto) -> str | None:
        for t in node.input:
            if t and t not in self.producer and t in self.tensors.failed:
                return f"its input {t!r} cannot be computed: {self.tensors.failed[t]}"
        return None

    def _formula_shape(
        self, node: onnx.NodeProto, inputs: list[str], op: str, attrs: Attrs
    ) -> tuple[tuple[tuple[int, ...], ...] | None, str | None]:
        """Fill a gap ONNX inference left, with the per-op formulas the torch path uses."""
        in_shapes = [self.g.nodes[p]["shapes"][0] if self.g.nodes[p]["shapes"] else None for p in inputs]
        if not in_shapes or any(s is None or len(s) < 3 for s in in_shapes):
            return None, None
        channels = _output_channels(op, attrs, in_shapes)
        if channels is None:
            return None, None
        try:
            from archlint.passes.formulas import ShapeError, infer_spatial
        except ImportError:
            return None, None
        try:
            spatial_out = infer_spatial(op, attrs, [tuple(s[2:]) for s in in_shapes])
        except ShapeError as exc:
            return None, _one_line(exc)
        except Exception:
            return None, None
        return ((in_shapes[0][0], channels, *spatial_out),), None

    # -- normalization ----------------------------------------------------------------------

    def _normalize(self, node: onnx.NodeProto) -> tuple[str, Attrs]:
        t = node.op_type
        a = _attributes(node)
        if t == "Conv":
            return "conv", self._conv(node, a)
        if t == "ConvTranspose":
            return "conv_transpose", self._conv_transpose(node, a)
        if t in POOLS:
            return POOLS[t], self._pool(node, a)
        if t in GLOBAL_POOLS:
            return "global_pool", Attrs(mode=t[len("Global"):-len("Pool")].lower())
        if t in SPATIAL_REDUCES:
            return self._reduce(node, a)
        if t == "Pad":
            return "pad", self._pad(node, a)
        if t in ("Resize", "Upsample"):
            return "upsample", self._resize(node, a)
        if t == "Slice":
            return "slice", self._slice(node, a)
        if t == "Split":
            return "slice", Attrs(axis=a.get("axis", 0), extra={"split": True})
        if t == "Concat":
            return "concat", Attrs(axis=a.get("axis"))
        if t in ARITHMETIC_MERGES or t in ELEMENTWISE_OTHER:
            return self._elementwise(node)
        if t == "Flatten":
            return "flatten", Attrs(axis=a.get("axis", 1), end_axis=-1)
        if t == "Reshape":
            return "reshape", Attrs(target_shape=self._reshape_target(node, a))
        if t in ("Squeeze", "Unsqueeze"):
            out = self.tensors.shapes.get(node.output[0])
            return "reshape", Attrs(target_shape=tuple(out) if out is not None else None)
        if t == "Transpose":
            return self._transpose(node, a)
        if t in ("Gemm", "MatMul"):
            return "linear", self._linear(node, a)
        if t in NORM_OPS:
            return "norm", Attrs(extra={k: v for k, v in a.items() if k in ("epsilon", "size", "axis")})
        if t in POINTWISE_OPS:
            return "pointwise", Attrs()
        if t == "DepthToSpace":
            return "pixel_shuffle", Attrs(factor=a["blocksize"], mode=a.get("mode", "DCR"))
        if t == "SpaceToDepth":
            return "pixel_unshuffle", Attrs(factor=a["blocksize"])
        return "unknown", Attrs()

    def _activation_count(self, node: onnx.NodeProto) -> int:
        return sum(1 for t in node.input if t in self.producer)

    def _elementwise(self, node: onnx.NodeProto) -> tuple[str, Attrs]:
        if self._activation_count(node) < 2:
            return "pointwise", Attrs()
        return ARITHMETIC_MERGES.get(node.op_type, "unknown"), Attrs()

    def _spatial_rank(self, tensor: str, fallback: int | None = None) -> int:
        shape = self.tensors.shapes.get(tensor)
        if shape is not None and len(shape) >= 2:
            return len(shape) - 2
        if fallback is not None:
            return fallback
        raise ValueError(f"rank of {tensor!r} is unknown")

    def _in_spatial(self, tensor: str) -> tuple[int, ...] | None:
        shape = self.tensors.shapes.get(tensor)
        if shape is None or len(shape) < 3 or None in shape[2:]:
            return None
        return tuple(shape[2:])

    def _conv(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        weight = self.tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = tuple(a.get("kernel_shape") or (weight[2:] if weight else ()))
        n = len(kernel) or self._spatial_rank(node.input[0])
        geometry = _window_geometry(a, n, kernel, self._in_spatial(node.input[0]))
        groups = int(a.get("group", 1))
        return Attrs(
            **geometry,
            groups=groups,
            in_channels=None if weight is None or weight[1] is None else weight[1] * groups,
            out_channels=None if weight is None else weight[0],
            bias=len(node.input) > 2 and bool(node.input[2]),
        )

    def _conv_transpose(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        weight = self.tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = tuple(a.get("kernel_shape") or (weight[2:] if weight else ()))
        n = len(kernel) or self._spatial_rank(node.input[0])
        stride = tuple(a.get("strides") or (1,) * n)
        dilation = tuple(a.get("dilations") or (1,) * n)
        output_padding = tuple(a.get("output_padding") or (0,) * n)
        auto_pad = a.get("auto_pad", "NOTSET")
        output_shape = tuple(a.get("output_shape") or ())
        if len(output_shape) == n + 2:
            output_shape = output_shape[2:]
        in_spatial = self._in_spatial(node.input[0])
        extra: dict[str, Any] = {}
        if output_shape:
            extra["output_shape"] = output_shape
        padding = conv_transpose_padding(
            in_spatial, kernel, stride, dilation, output_padding,
            _pairs(a.get("pads"), n), auto_pad, output_shape,
        )
        groups = int(a.get("group", 1))
        return Attrs(
            kernel=kernel, stride=stride, dilation=dilation, padding=padding,
            output_padding=output_padding, groups=groups,
            auto_pad="" if auto_pad == "NOTSET" else auto_pad,
            in_channels=None if weight is None else weight[0],
            out_channels=None if weight is None or weight[1] is None else weight[1] * groups,
            bias=len(node.input) > 2 and bool(node.input[2]),
            extra=extra,
        )

    def _pool(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        kernel = tuple(a["kernel_shape"])
        geometry = _window_geometry(a, len(kernel), kernel, self._in_spatial(node.input[0]))
        extra = {"p": a.get("p", 2)} if node.op_type == "LpPool" else {}
        return Attrs(
            **geometry,
            ceil_mode=bool(a.get("ceil_mode", 0)),
            # ONNX's default (0: padding not counted) is the opposite of PyTorch's.
            count_include_pad=bool(a.get("count_include_pad", 0)),
            extra=extra,
        )

    def _reduce(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.static.ints(node.input[1])
        keepdims = bool(a.get("keepdims", 1))
        if rank >= 3 and axes is not None:
            spatial_axes = set(range(2, rank))
            if {ax % rank for ax in axes} == spatial_axes:
                return "global_pool", Attrs(mode=SPATIAL_REDUCES[node.op_type], extra={"keepdims": keepdims})
        return "unknown", Attrs(extra={"axes": axes, "keepdims": keepdims})

    def _pad(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        if len(node.input) > 1 and node.input[1]:
            pads = self.static.ints(node.input[1])
        else:
            pads = a.get("pads", a.get("paddings"))
        axes = None
        if len(node.input) > 3 and node.input[3]:
            axes = self.static.ints(node.input[3])
        mode = a.get("mode", "constant")
        value = a.get("value", 0.0)
        if len(node.input) > 2 and node.input[2]:
            constant = self.static.floats(node.input[2])
            value = constant[0] if constant else None
        padding_mode = _PAD_MODES.get(mode, mode)
        if mode == "constant" and value != 0:
            padding_mode = "constant"
        extra: dict[str, Any] = {"value": value} if mode == "constant" else {}
        if pads is None or rank < 3:
            return Attrs(padding_mode=padding_mode, extra={**extra, "pads": pads})
        axes = list(range(rank)) if axes is None else [ax % rank for ax in axes]
        k = len(axes)
        per_axis = {ax: (pads[i], pads[i + k]) for i, ax in enumerate(axes)}
        padding = tuple(per_axis.get(ax, (0, 0)) for ax in range(2, rank))
        other = {ax: p for ax, p in per_axis.items() if ax < 2 and p != (0, 0)}
        if other:
            extra["non_spatial_pads"] = other
        return Attrs(padding=padding, padding_mode=padding_mode, extra=extra)

    def _resize(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        inputs = list(node.input)
        if node.op_type == "Upsample":
            scales_name, sizes_name = (inputs[1] if len(inputs) > 1 else ""), ""
        elif self.opsets.get("", 1) < 11:
            scales_name, sizes_name = inputs[1], ""
        else:
            scales_name = inputs[2] if len(inputs) > 2 else ""
            sizes_name = inputs[3] if len(inputs) > 3 else ""
        scales = self.static.floats(scales_name) if scales_name else a.get("scales")
        sizes = self.static.ints(sizes_name) if sizes_name else None
        axes = a.get("axes")
        axes = list(range(rank)) if axes is None else [ax % rank for ax in axes]
        spatial_axes = list(range(2, rank))
        scale = size = None
        if scales:
            by_axis = dict(zip(axes, scales))
            scale = tuple(float(by_axis.get(ax, 1.0)) for ax in spatial_axes)
        if sizes:
            by_axis = dict(zip(axes, sizes))
            size = tuple(by_axis.get(ax) for ax in spatial_axes)
        size_from = None
        if sizes_name or scales_name:
            # The size read off another tensor (F.interpolate(x, size=skip.shape[2:])); the
            # batch and channel entries usually come from the resized tensor itself.
            sources = self.static.shape_sources(sizes_name or scales_name) - {node.input[0]}
            if len(sources) == 1:
                size_from = self.producer.get(next(iter(sources)))
        default_ctm = "half_pixel" if node.op_type == "Resize" and self.opsets.get("", 1) >= 11 else "asymmetric"
        ctm = a.get("coordinate_transformation_mode", default_ctm)
        extra = {"coordinate_transformation_mode": ctm}
        if "nearest_mode" in a:
            extra["nearest_mode"] = a["nearest_mode"]
        return Attrs(
            scale=scale, size=size, size_from=size_from, mode=a.get("mode", "nearest"),
            align_corners=ctm == "align_corners", extra=extra,
        )

    def _slice(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        shape = self.tensors.shapes.get(node.input[0])
        rank = len(shape or ())
        inputs = list(node.input) + [""] * 5
        if inputs[1]:
            starts, ends = self.static.ints(inputs[1]), self.static.ints(inputs[2])
            axes = self.static.ints(inputs[3]) if inputs[3] else None
            steps = self.static.ints(inputs[4]) if inputs[4] else None
        else:
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        if starts is None or ends is None or rank < 3:
            return Attrs(extra={"starts": starts, "ends": ends, "axes": axes, "steps": steps})
        axes = list(range(len(starts))) if axes is None else [ax % rank for ax in axes]
        steps = steps or [1] * len(starts)
        per_axis = {
            ax: (_slice_bound(s, st, start=True), _slice_bound(e, st, start=False), st)
            for ax, s, e, st in zip(axes, starts, ends, steps)
        }
        slices = tuple(per_axis.get(ax, (None, None, 1)) for ax in range(2, rank))
        other = {ax: v for ax, v in per_axis.items() if ax < 2}
        return Attrs(slices=slices, extra={"non_spatial_slices": other} if other else {})

    def _reshape_target(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[int | None, ...] | None:
        if len(node.input) < 2:  # Reshape-1 carries the shape as an attribute
            target = a.get("shape")
            return None if target is None else tuple(None if v == 0 else v for v in target)
        allow_zero = bool(a.get("allowzero", 0))
        entries = self._shape_entries(node.input[1])
        if entries is None:
            return None
        return tuple(None if (v == 0 and not allow_zero) else v for v in entries)

    def _shape_entries(self, tensor: str) -> list[int | None] | None:
        """A shape vector as written: entries computed from a runtime shape become None."""
        producer = self.static.producer_of(tensor)
        if producer is not None and producer.op_type == "Concat" and self.static.shape_sources(tensor):
            out: list[int | None] = []
            for piece in producer.input:
                values = self.static.ints(piece)
                if values is None:
                    return None
                out.extend([None] * len(values) if self.static.shape_sources(piece) else values)
            return out
        values = self.static.ints(tensor)
        if values is None:
            return None
        return [None] * len(values) if self.static.shape_sources(tensor) else values

    def _transpose(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        out = self.tensors.shapes.get(node.output[0])
        rank = len(out or ())
        perm = list(a.get("perm") or range(rank - 1, -1, -1))
        # A permutation of the leading axes that leaves batch and the two trailing (spatial)
        # axes alone, as in ShuffleNet's channel shuffle, only moves channels around.
        if rank >= 4 and perm[0] == 0 and perm[-2:] == [rank - 2, rank - 1]:
            return "reshape", Attrs(target_shape=tuple(out) if out else None, extra={"perm": perm})
        return "unknown", Attrs(extra={"perm": perm})

    def _linear(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        a_static = node.input[0] not in self.producer
        b_static = node.input[1] not in self.producer
        bias = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])
        if b_static and not a_static:
            weight = self.tensors.shapes.get(node.input[1])
            if weight is not None and len(weight) >= 2:
                if node.op_type == "Gemm" and a.get("transB", 0):
                    out_f, in_f = weight[0], weight[1]
                else:
                    in_f, out_f = weight[-2], weight[-1]
                return Attrs(in_features=in_f, out_features=out_f, bias=bias)
        return Attrs(bias=bias, extra={"weight_is_activation": not b_static})


# ---------------------------------------------------------------------------------------------
# per-op geometry (pure functions, tested against onnxruntime)


def _pairs(pads: list[int] | None, n: int) -> tuple[tuple[int, int], ...]:
    """ONNX pads ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` -> ((begin, end), ...)."""
    if not pads:
        return ((0, 0),) * n
    if len(pads) != 2 * n:
        raise ValueError(f"pads has {len(pads)} entries, expected {2 * n}")
    return tuple((int(pads[i]), int(pads[i + n])) for i in range(n))


def _window_geometry(
    a: dict[str, Any], n: int, kernel: tuple[int, ...], in_spatial: tuple[int, ...] | None
) -> dict[str, Any]:
    stride = tuple(a.get("strides") or (1,) * n)
    dilation = tuple(a.get("dilations") or (1,) * n)
    auto_pad = a.get("auto_pad", "NOTSET")
    padding = same_padding(in_spatial, kernel, stride, dilation, auto_pad, _pairs(a.get("pads"), n))
    return dict(
        kernel=kernel, stride=stride, dilation=dilation, padding=padding,
        auto_pad="" if auto_pad == "NOTSET" else auto_pad,
    )


def same_padding(
    in_spatial: tuple[int, ...] | None,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    auto_pad: str,
    explicit: tuple[tuple[int, int], ...],
) -> tuple[tuple[int, int], ...]:
    """(begin, end) pads of a Conv or pool, resolving ``auto_pad`` per the ONNX spec.

    SAME_*: the output is ``ceil(in / stride)`` and the total pad is
    ``max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in)``; SAME_UPPER puts the odd
    pixel at the end, SAME_LOWER at the beginning. The split depends on the input size, so it is
    resolved at the example size (``()`` when that size is unknown).
    """
    if auto_pad in ("", "NOTSET"):
        return explicit
    if auto_pad == "VALID":
        return ((0, 0),) * len(kernel)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    if in_spatial is None:
        return ()
    out = []
    for size, k, s, d in zip(in_spatial, kernel, stride, dilation):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return tuple(out)


def conv_transpose_padding(
    in_spatial: tuple[int, ...] | None,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    output_padding: tuple[int, ...],
    explicit: tuple[tuple[int, int], ...],
    auto_pad: str,
    output_shape: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """(begin, end) pads of a ConvTranspose per the ONNX spec.

    With ``output_shape`` (or auto_pad SAME_*, whose target is ``in * stride``) the pads are
    generated: ``total = stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - out``;
    SAME_UPPER gives ``(total // 2, total - total // 2)``, anything else the reverse.
    """
    same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if not output_shape and not same:
        return ((0, 0),) * len(kernel) if auto_pad == "VALID" else explicit
    if in_spatial is None:
        return ()
    targets = output_shape or tuple(size * s for size, s in zip(in_spatial, stride))
    out = []
    for size, k, s, d, op, target in zip(in_spatial, kernel, stride, dilation, output_padding, targets):
        total = s * (size - 1) + op + (k - 1) * d + 1 - target
        half = int(total / 2)  # C++ division, as the spec's reference implementation
        out.append((half, total - half) if auto_pad == "SAME_UPPER" else (total - half, half))
    return tuple(out)


#: Ops whose ONNX shape inference (onnx 1.23) disagrees with the spec text and onnxruntime.
RUNTIME_CORRECTED = frozenset({"MaxPool", "AveragePool", "LpPool", "ConvTranspose"})


def runtime_spatial(
    node: onnx.NodeProto,
    in_shape: tuple[int | None, ...] | None,
    weight_shape: tuple[int | None, ...] | None,
) -> tuple[int, ...] | None:
    """Output spatial size where ONNX's shape inference is known to be wrong, else None.

    * Pools with ``ceil_mode``: a last window that would start in the end padding is dropped
      (the spec's note, onnxruntime and PyTorch); onnx's inference keeps it.
    * ConvTranspose with ``auto_pad=SAME_*`` and no ``output_shape``: the output is
      ``in * stride`` (the spec, onnxruntime); onnx's inference adds ``output_padding``.
    """
    if not _concrete(in_shape) or len(in_shape) < 3:
        return None
    a = _attributes(node)
    spatial_in = in_shape[2:]
    n = len(spatial_in)
    auto_pad = a.get("auto_pad", "NOTSET")
    if node.op_type == "ConvTranspose":
        if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not a.get("output_shape"):
            stride = a.get("strides") or [1] * n
            return tuple(size * s for size, s in zip(spatial_in, stride))
        return None
    if not a.get("ceil_mode") or auto_pad not in ("NOTSET", "VALID") or "kernel_shape" not in a:
        return None
    kernel = a["kernel_shape"]
    stride = a.get("strides") or [1] * n
    dilation = a.get("dilations") or [1] * n
    pads = ((0, 0),) * n if auto_pad == "VALID" else _pairs(a.get("pads"), n)
    from archlint.passes.formulas import pool_size

    return tuple(
        int(pool_size(size, k, s, d, pb, pe, ceil_mode=True))
        for size, k, s, d, (pb, pe) in zip(spatial_in, kernel, stride, dilation, pads)
    )


def _slice_bound(value: int, step: int, *, start: bool) -> int | None:
    """An ONNX slice bound, with the "to the end of the axis" sentinels mapped to None."""
    if step > 0 and not start and value >= _SLICE_TO_END:
        return None
    if step < 0 and not start and value <= -_SLICE_TO_END:
        return None
    if step < 0 and start and value >= _SLICE_TO_END:
        return None
    return int(value)


def _consistency_error(
    op: str, attrs: Attrs, in_shapes: list[tuple[int | None, ...] | None], out: tuple[int, ...]
) -> str | None:
    """Checks ONNX shape inference leaves out (it accepts these, the runtime fails on them)."""
    first = in_shapes[0] if in_shapes else None
    if not _concrete(first):
        return None
    if op in ("conv", "conv_transpose") and attrs.in_channels is not None and len(first) > 1:
        if first[1] != attrs.in_channels:
            return (
                f"input has {first[1]} channels but the weight expects {attrs.in_channels} "
                f"(input shape {_shape_text(first)})"
            )
    if op == "conv_transpose" and not attrs.auto_pad.startswith("SAME") and "output_shape" not in attrs.extra:
        # onnxruntime recomputes the input size from the output and refuses output_padding >=
        # stride (PyTorch also allows output_padding < dilation; onnxruntime does not)
        for s, op_ in zip(attrs.stride, attrs.output_padding):
            if op_ >= s:
                return (
                    f"output_padding {op_} is not smaller than the stride {s} "
                    "(onnxruntime rejects it)"
                )
    if op == "reshape" and math.prod(first) != math.prod(out):
        return (
            f"cannot reshape {_shape_text(first)} ({math.prod(first)} elements) to "
            f"{_shape_text(out)} ({math.prod(out)} elements)"
        )
    if any(d <= 0 for d in out) and all(d > 0 for d in first):
        if op in ("conv", "max_pool", "avg_pool", "lp_pool") and attrs.kernel:
            extents = [d * (k - 1) + 1 for k, d in zip(attrs.kernel, attrs.dilation or (1,) * len(attrs.kernel))]
            return (
                f"output would be empty ({_shape_text(out)}): the window "
                f"{'x'.join(map(str, extents))} is larger than the padded input "
                f"{_shape_text(first[2:])}"
            )
        return f"output would be empty ({_shape_text(out)}) for input {_shape_text(first)}"
    return None


def _output_channels(op: str, attrs: Attrs, in_shapes: list[tuple[int, ...]]) -> int | None:
    c = in_shapes[0][1]
    if op in ("conv", "conv_transpose"):
        return attrs.out_channels
    if op in ("max_pool", "avg_pool", "lp_pool", "upsample", "pad", "pointwise", "norm", "add", "sub", "mul", "div"):
        return c
    if op == "concat" and attrs.axis is not None and attrs.axis % len(in_shapes[0]) == 1:
        return sum(s[1] for s in in_shapes)
    if op == "pixel_shuffle" and attrs.factor:
        return c // attrs.factor ** (len(in_shapes[0]) - 2)
    if op == "pixel_unshuffle" and attrs.factor:
        return c * attrs.factor ** (len(in_shapes[0]) - 2)
    return None


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.name or node.op_type + '_' + str(index)!r} ({node.op_type})"
