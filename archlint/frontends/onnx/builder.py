"""Building the IR from the sorted ONNX nodes: one node per op that reads an activation."""

from __future__ import annotations

from typing import Any

import networkx as nx
import onnx

from archlint.frontends.onnx.geometry import _consistency_error, _output_channels
from archlint.frontends.onnx.inference import _concrete, _one_line, _Tensors
from archlint.frontends.onnx.node_table import NodeTable
from archlint.frontends.onnx.op_mapping import NORM_OPS, POINTWISE_OPS, POOLS, OpMapping
from archlint.frontends.onnx.static_values import SHAPE_READERS
from archlint.graph import (
    NO_ATTRS,
    Attrs,
    Location,
    OpWriter,
    add_op,
    int_shapes,
    new_graph,
    new_location,
    node_table,
)

#: Ops whose normalization reads a static (non-activation) input only through its shape and
#: whether it is given (a weight, a bias): nodes with different weights of the same shape share
#: one record. Every other op's static inputs are keyed by name (a constant's name is in its
#: attrs; a Reshape's target is the value of its shape input).
_STATIC_BY_SHAPE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", *NORM_OPS, *POOLS,
                              *(POINTWISE_OPS - {"Softmax", "LogSoftmax"})})

#: Ops whose normalization reads an activation's name (Resize: the size read off another
#: tensor than the one resized): one record per node.
_PER_NODE = frozenset({"Resize", "Upsample"})

#: _Record.shapes of a record whose outputs ONNX left unknown: the formulas fill them per node
_FORMULA = object()
#: _Record.shapes not yet read (only a node on the clean path reads them)
_UNSET = object()


class _Record:
    """What every node of one record shares: the op kind and attrs, and (asked on first use by a
    node whose inputs are not poisoned, when inference did not fail) its shapes and error."""

    __slots__ = ("op", "attrs", "origin", "custom", "shapes", "error")

    def __init__(self, op: str, attrs: Attrs, origin: str, custom: bool):
        self.op, self.attrs, self.origin, self.custom = op, attrs, origin, custom
        self.shapes: Any = _UNSET  # int_shapes(...), None (an error), or _FORMULA
        self.error: str | None = None


class _GraphBuilder(OpMapping):
    def __init__(
        self,
        model: onnx.ModelProto,
        table: NodeTable,
        tensors: _Tensors,
        *,
        name: str,
        file: str | None,
        notes: list[str],
    ):
        self.model = model
        self.table = table
        self.tensors = tensors
        self.static = tensors.static
        self.file = file
        self.notes = notes
        self.g = new_graph(name, file, "onnx")
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        self.local_functions = {(f.domain, f.name) for f in model.functions}
        #: op_mapping's Conv records by what they are computed from
        self._conv_cache: dict[tuple[Any, ...], Attrs] = {}
        self._consistency_cache: dict[tuple[Any, ...], tuple[Attrs, str | None]] = {}
        #: activation tensor -> IR node that produces it
        self.producer: dict[str, str] = {}
        #: IR nodes whose outputs are unknown past them (custom op, failure)
        self.poisoned: set[str] = set()
        self.used_names: set[str] = set()
        self.unknown_ops: list[str] = []
        self._custom_by_type: dict[tuple[str, str], bool] = {}
        #: _Record per distinct node record (see ``_record``)
        self._records: dict[tuple[Any, ...], _Record] = {}

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
        table = self.table
        node_names = [name or f"{op_type}_{index}"
                      for name, op_type, index in zip(table.name, table.op_type, table.index)]
        taken = set(node_names)
        for value in real_inputs:
            ir_name = self._unique(value.name if value.name not in taken else f"input:{value.name}")
            shape = self.tensors.shapes.get(value.name)
            add_op(
                self.g, ir_name, "input",
                shapes=(shape,) if _concrete(shape) else None,
                location=self._location(value.name), origin="input",
            )
            self.producer[value.name] = ir_name
        self._add_nodes(node_names)
        self._add_outputs()
        OpWriter(self.g).finish()
        unmapped = sorted({
            data["origin"] for data in node_table(self.g).values()
            if data["op"] == "unknown" and "::" not in data["origin"]
        })
        if unmapped:
            self.notes.append(
                f"ONNX op(s) with no archlint kind: {', '.join(unmapped)}; shapes come from ONNX, "
                "the receptive field is unknown past them"
            )
        if self.unknown_ops:
            self.g.graph["capture_note"] = self.unknown_ops[0]
        return self.g

    def _add_nodes(self, node_names: list[str]) -> None:
        """One IR node per ONNX node that reads an activation, in the table's (topological)
        order. The op kind, attrs and shapes come from one ``_Record`` per distinct record; what
        is left per node is its names, a key, a dict lookup and the graph's dicts."""
        table, producer, used_names, poisoned = self.table, self.producer, self.used_names, self.poisoned
        tensor_shapes = self.tensors.shapes.get
        # after a failure, shapes and errors are per node (_shapes); else per record
        per_node_shapes = bool(self.tensors.node_errors or self.tensors.failed)
        add = OpWriter(self.g).add
        file, records, record_of = self.file, self._records, self._record
        domains, attr_keys, protos = table.domain, table.attr_key, table.protos
        producer_keys = producer.keys()
        for i, op_type, ins, outs in table.rows():
            if producer_keys.isdisjoint(ins) or op_type in SHAPE_READERS:
                continue  # weights or shape arithmetic
            onnx_name = node_names[i]
            if onnx_name in used_names:
                ir_name = self._unique(onnx_name)
            else:
                ir_name = onnx_name
                used_names.add(onnx_name)
            by_shape = op_type in _STATIC_BY_SHAPE
            inputs, entries = [], []
            for t in ins:
                src = producer.get(t)
                if src is not None:
                    inputs.append(src)
                    entries.append(tensor_shapes(t))
                elif by_shape:
                    # a str first: never an activation's shape (ints and None)
                    entries.append(("static", tensor_shapes(t)) if t else "")
                else:
                    entries.append(t)
            # an omitted output ("") is skipped where an unknown one stops the shapes: both
            # read None here, so where one is omitted the key says which
            key = (op_type, domains[i], attr_keys[i], tuple(entries), tuple(map(tensor_shapes, outs)),
                   "" in outs and tuple([bool(o) for o in outs]))
            record = records.get(key)
            if record is None:
                record = record_of(protos[i], op_type)
                if op_type not in _PER_NODE:
                    records[key] = record
            op, attrs = record.op, record.attrs
            if record.custom:
                shapes, error = None, None
                self.unknown_ops.append(
                    f"unknown op {record.origin} at node {onnx_name!r}: its output shapes and "
                    "receptive field are unknown past it"
                )
                self.notes.append(self.unknown_ops[-1])
                poisoned.add(ir_name)
            elif poisoned and not poisoned.isdisjoint(inputs):
                shapes, error = None, None
                poisoned.add(ir_name)
            else:
                if per_node_shapes:
                    shapes, error = self._shapes(table.index[i], protos[i], inputs, op, attrs, False)
                else:
                    if record.shapes is _UNSET:
                        self._record_shapes(record, ins, outs)
                    if record.shapes is _FORMULA:
                        shapes, error = self._formula_shape(protos[i], inputs, op, attrs)
                    else:
                        shapes, error = record.shapes, record.error
                if shapes is not None and record.shapes is not shapes:
                    shapes = int_shapes(shapes)
                if error is not None:
                    poisoned.add(ir_name)
            add(ir_name, op, tuple(inputs), attrs, shapes, new_location(file, None, onnx_name),
                record.origin, error)
            for out in outs:
                if out:
                    producer[out] = ir_name

    def _record(self, node: onnx.NodeProto, op_type: str) -> _Record:
        """The op kind and attrs of ``node``'s record (``_normalize``, once per record)."""
        if self._is_custom(node):
            return _Record("unknown", NO_ATTRS, f"{node.domain or 'ai.onnx'}::{op_type}", True)
        try:
            op, attrs = self._normalize(node)
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
            op, attrs = "unknown", Attrs(extra={"normalize_error": _one_line(exc)})
        return _Record(op, attrs, op_type, False)

    def _record_shapes(self, record: _Record, ins: list[str], outs: list[str]) -> None:
        """What ``_shapes`` gives a node of this record whose inputs are not poisoned (after a
        clean inference)."""
        found = self._onnx_shapes(record.op, record.attrs, ins, outs)
        if found is None:
            record.shapes = _FORMULA
        else:
            shapes, record.error = found
            record.shapes = None if shapes is None else int_shapes(shapes)

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

    def _is_custom(self, node: onnx.NodeProto) -> bool:
        key = (node.domain, node.op_type)
        custom = self._custom_by_type.get(key)
        if custom is None:
            if key in self.local_functions:
                custom = False
            else:
                domain = "" if node.domain == "ai.onnx" else node.domain
                custom = not onnx.defs.has(node.op_type, domain)
            self._custom_by_type[key] = custom
        return custom

    # -- shapes ------------------------------------------------------------------------------

    def _shapes(
        self, index: int, node: onnx.NodeProto, inputs: list[str], op: str, attrs: Attrs, custom: bool
    ) -> tuple[tuple[tuple[int, ...], ...] | None, str | None]:
        if custom or (self.poisoned and not self.poisoned.isdisjoint(inputs)):
            return None, None
        error = self.tensors.node_errors.get(index)
        if error is None and self.tensors.failed:
            error = self._static_input_failure(node)
        if error is not None:
            return None, error
        found = self._onnx_shapes(op, attrs, node.input, node.output)
        return found if found is not None else self._formula_shape(node, inputs, op, attrs)

    def _onnx_shapes(
        self, op: str, attrs: Attrs, ins: Any, outs: Any
    ) -> tuple[tuple[tuple[int, ...], ...] | None, str | None] | None:
        """ONNX's output shapes up to the first unknown one, or the consistency error; None
        when ONNX knows none (the formulas may)."""
        shapes = []
        known = self.tensors.shapes
        for out in outs:
            if not out:
                continue
            shape = known.get(out)
            if not _concrete(shape):
                break
            shapes.append(shape)
        if not shapes:
            return None
        producer = self.producer
        in_shapes = tuple([known.get(t) for t in ins if t in producer])
        error = self._consistency(op, attrs, in_shapes, shapes[0])
        return (None, error) if error else (tuple(shapes), None)

    def _consistency(self, op: str, attrs: Attrs, in_shapes: tuple[Any, ...], out: Any) -> str | None:
        """_consistency_error, asked once per distinct (op, attrs record, shapes): the nodes of a
        large graph repeat a few of these (attrs records are shared, see ``_conv``)."""
        try:
            key = (op, id(attrs), in_shapes, out)
            found = self._consistency_cache.get(key)
        except TypeError:  # a shape that is not a tuple
            return _consistency_error(op, attrs, list(in_shapes), out)
        if found is None:
            # the record is kept with the answer, so its id is not reused while cached
            found = self._consistency_cache[key] = (attrs, _consistency_error(op, attrs, list(in_shapes), out))
        return found[1]

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
