"""Static values: weights and shape arithmetic (initializers, Constant nodes, what is computed
from them or from Shape/Size), evaluated on demand and only when small."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from archlint.frontends.onnx.geometry import _attributes
from archlint.frontends.onnx.node_table import NodeTable

if TYPE_CHECKING:
    from archlint.frontends.onnx.inference import _Tensors

#: Static tensors with more elements than this are never materialized (weights, not shapes).
MAX_STATIC_ELEMENTS = 4096

#: Ops that turn an activation into a static (shape) value.
SHAPE_READERS = frozenset({"Shape", "Size"})


def _materializable(tensor: onnx.TensorProto) -> bool:
    """Embedded and small: safe to turn into numpy (never follows external data)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
        return False
    return math.prod(tensor.dims) <= MAX_STATIC_ELEMENTS


class _StaticValues:
    """Values of static tensors (initializers, Constant nodes, shape arithmetic), on demand.

    Uses ``onnx.reference`` for the arithmetic, one node at a time, and refuses anything larger
    than :data:`MAX_STATIC_ELEMENTS`: weights are described by their shapes, never built.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        table: NodeTable,
        tensors: _Tensors,
        activations: set[str],
    ):
        self._activations = activations
        self._opsets = {o.domain: o.version for o in model.opset_import}
        self._initializers = {t.name: t for t in model.graph.initializer}
        self._table = table
        self._producers: dict[str, onnx.NodeProto] | None = None
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

    @property
    def _producer(self) -> dict[str, onnx.NodeProto]:
        # built on first use: a graph whose ops read no static value never needs it
        if self._producers is None:
            table = self._table
            self._producers = {o: node for node, outputs in zip(table.protos, table.outputs)
                               for o in outputs if o}
        return self._producers

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
