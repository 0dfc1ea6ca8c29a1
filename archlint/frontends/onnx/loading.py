"""Loading an ONNX file without its external data, the header checks and a topological order."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import onnx

from archlint.frontends import TargetError
from archlint.frontends.onnx.geometry import _node_label, _one_line
from archlint.frontends.onnx.node_table import MAY_HOLD_GRAPHS, NodeTable

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


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


def _sorted_nodes(graph: onnx.GraphProto) -> NodeTable:
    """The nodes in a topological order; TargetError on a cycle or a dangling read."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    available |= {t.values.name for t in graph.sparse_initializer}
    table = NodeTable(list(graph.node))
    if _in_file_order(table, graph, available):  # what ONNX requires: skip the sort
        return table
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = index
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
    return table.reordered(list(nx.lexicographical_topological_sort(deps)))


def _in_file_order(table: NodeTable, graph: onnx.GraphProto, available: set[str]) -> bool:
    """True when the file's node order is already topological, no read dangles, every graph
    output is provided and every tensor has one source: then the lexicographic topological
    sort would return the file order. One pass: a read must be available or an earlier output."""
    seen = set(available)
    protos, attr_key, may_hold_graphs = table.protos, table.attr_key, table.may_hold_graphs
    for i, _, inputs, outputs in table.rows():
        if attr_key[i] is not None and may_hold_graphs(i):
            inputs = _node_reads(protos[i])
        for tensor in inputs:
            if tensor and tensor not in seen:
                return False  # read before it is written, or never: the sort path says which
        for out in outputs:
            if out:
                if out in seen:
                    return False  # two sources (or an input's name): leave it to the sort path
                seen.add(out)
    return all(out.name in seen for out in graph.output)


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, including outer-scope names used inside its subgraphs."""
    reads = [t for t in node.input if t]
    for attr in node.attribute:
        if attr.type not in MAY_HOLD_GRAPHS:
            continue
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            reads.extend(_outer_reads(sub))
    return reads


def _outer_reads(graph: onnx.GraphProto) -> list[str]:
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    return [t for n in graph.node for t in _node_reads(n) if t not in local]


def file_mentions(path: Path, needle: bytes) -> bool:
    """Whether the file's bytes contain ``needle``, read a MiB at a time (never all at once, and
    never mapped: a mapped file's pages would count in the process's peak memory). True when the
    file cannot be read: the caller then looks the slow way."""
    overlap = len(needle) - 1
    tail = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if needle in chunk or needle in tail + chunk[:overlap]:
                    return True
                tail = chunk[-overlap:] if overlap else b""
    except OSError:
        return True
    return False


def external_data_outside(model: onnx.ModelProto, folder: Path | None) -> list[str]:
    """Warnings for tensors whose external data points outside the model's folder (an absolute
    path, or one that climbs out with '..'). Only the reference is read; the file never is."""
    warnings = []
    for tensor in _external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        path = Path(location)
        outside = path.is_absolute() or location.startswith(("/", "\\"))
        if not outside and folder is not None:
            base = folder.resolve()
            target = (base / path).resolve()
            outside = base != target and base not in target.parents
        elif not outside:
            outside = ".." in path.parts
        if outside:
            warnings.append(
                f"warning: tensor {tensor.name!r} keeps its data in {location!r}, outside the "
                "model's folder; archlint never opens it, but loading this model with its "
                "external data would read that file"
            )
    return warnings



def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors with external data, in the order onnx's ``_get_all_tensors`` yields them
    (the graph's and its subgraphs' initializers, then attribute tensors, the functions' last),
    in one plain walk: onnx's nested generators cost microseconds per attribute of every node."""
    external = onnx.TensorProto.EXTERNAL
    initializers: list[onnx.TensorProto] = []
    attribute_tensors: list[onnx.TensorProto] = []

    def walk(graph, with_initializers: bool) -> None:
        if with_initializers:  # a function has none, and onnx reads none below one
            initializers.extend(t for t in graph.initializer if t.data_location == external)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t") and attr.t.data_location == external:
                    attribute_tensors.append(attr.t)
                attribute_tensors.extend(t for t in attr.tensors if t.data_location == external)
                if attr.HasField("g"):
                    walk(attr.g, with_initializers)
                for sub in attr.graphs:
                    walk(sub, with_initializers)

    walk(model.graph, True)
    for function in model.functions:
        walk(function, False)
    return initializers + attribute_tensors
