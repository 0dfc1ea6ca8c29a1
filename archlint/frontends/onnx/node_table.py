"""Every node's fields, read off the protos once.

upb builds a new Python object on every field read of a message (0.1-0.5 us each), and the
frontend's scans (file order, activations, inference gaps, static producers, the builder) each
read every node's inputs, outputs and op type; on a graph of tens of thousands of nodes that was
most of the frontend's own time. The scans read these plain lists instead.
"""

from __future__ import annotations

from typing import Iterator

import onnx

#: attribute kinds that may carry a subgraph (an untyped attribute is looked into too)
MAY_HOLD_GRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                   onnx.AttributeProto.UNDEFINED)


_SERIALIZE = onnx.NodeProto.SerializeToString
#: the tag of ModelProto.graph (field 7, length-delimited); GraphProto.node is field 1 (b"\n")
_GRAPH_TAG = bytes([7 << 3 | 2])
_SMALL = [bytes([n]) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class NodeTable:
    """The nodes of one graph in one order, field by field (position ``i`` is one node).

    ``attr_key`` is the node's attributes as serialized bytes (one bytes per attribute, a tuple;
    None for a node without attributes): an exact key for "the same attributes", so work that
    depends only on them is done once per distinct record (a large graph repeats a few).
    """

    __slots__ = ("protos", "index", "op_type", "domain", "inputs", "outputs", "name",
                 "attr_key", "_graphs")

    def __init__(self, protos: list[onnx.NodeProto], index: list[int] | None = None):
        self.protos = protos
        self.index = list(range(len(protos))) if index is None else index
        self.op_type = [n.op_type for n in protos]
        self.domain = [n.domain for n in protos]
        self.inputs = [n.input[:] for n in protos]
        self.outputs = [n.output[:] for n in protos]
        self.name = [n.name for n in protos]
        self.attr_key = [
            tuple([a.SerializeToString() for a in attrs]) if (attrs := n.attribute) else None
            for n in protos
        ]
        #: attr_key -> whether one of those attributes may hold a subgraph
        self._graphs: dict[tuple[bytes, ...], bool] = {}

    def reordered(self, order: list[int]) -> NodeTable:
        """The same nodes in ``order`` (positions in this table), no proto read again."""
        out = NodeTable.__new__(NodeTable)
        out.protos = [self.protos[i] for i in order]
        out.index = [self.index[i] for i in order]
        for field in ("op_type", "domain", "inputs", "outputs", "name", "attr_key"):
            column = getattr(self, field)
            setattr(out, field, [column[i] for i in order])
        out._graphs = self._graphs
        return out

    def pairs(self) -> list[tuple[int, onnx.NodeProto]]:
        """(original index, node), the form the rest of the frontend passes around."""
        return list(zip(self.index, self.protos))

    def may_hold_graphs(self, i: int) -> bool:
        """Whether node ``i`` has an attribute that may hold a subgraph (asked once per distinct
        attributes record)."""
        key = self.attr_key[i]
        if key is None:
            return False
        found = self._graphs.get(key)
        if found is None:
            found = self._graphs[key] = any(
                a.type in MAY_HOLD_GRAPHS for a in self.protos[i].attribute)
        return found

    def serialized_with(self, model: onnx.ModelProto) -> bytes:
        """The bytes of ``model`` (which has no nodes) with these nodes as its graph's nodes.

        Protobuf merges a message field that occurs twice, so the nodes go in a second
        occurrence of ``ModelProto.graph``: each node is serialized once, where copying them
        into a model (then serialized for inference) copied every node twice."""
        parts = [b"\n" + _varint(len(data)) + data for data in map(_SERIALIZE, self.protos)]
        body = b"".join(parts)
        return model.SerializeToString() + _GRAPH_TAG + _varint(len(body)) + body

    def __len__(self) -> int:
        return len(self.protos)

    def rows(self) -> Iterator[tuple[int, str, list[str], list[str]]]:
        """(position, op_type, inputs, outputs) per node."""
        return zip(range(len(self.protos)), self.op_type, self.inputs, self.outputs)
