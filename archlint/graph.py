"""The IR: one ``networkx.DiGraph`` per model, one node per op.

Both frontends build this graph and nothing else; passes and rules read only it.

Node attributes (``g.nodes[name][key]``):

``op``        normalized kind, one of :data:`OP_KINDS`.
``origin``    the torch target (``nn.Conv2d``, ``torch.cat``) or the ONNX op_type, for messages.
``inputs``    producer names in argument order (a name may repeat: ``x + x``).
``attrs``     an :class:`Attrs` record, normalized per spatial axis.
``shapes``    output shapes from the frontend's exact engine, ``((N, C, H, W), ...)``;
              ``None`` when unknown (past a failure or an op nobody can model).
``location``  a :class:`Location`.
``error``     the reason shape propagation failed *at this node*, else ``None``.

Passes add typed facts under their own keys (``rf``, ...). Graph-level data lives in
``g.graph``: ``name`` (model name), ``target`` (file), ``frontend`` (``torch``/``onnx``),
``input_shapes``, ``input_assumed`` (bool), ``capture_note`` (where capture stopped, or None),
plus graph-level facts written by passes.

Edges go from producer to consumer and carry ``slots``: the consumer's argument positions fed
by that producer (a list, because ``x + x`` feeds two slots from one producer).

Spatial axes are the axes after batch and channel: ``shape[2:]`` of an NC* tensor.

Building a large graph: :class:`OpWriter` adds ops without ``add_op``'s per-call checks and
records the insertion order as the topological order.

Reading a large graph: :func:`ops` gives the topological order and :func:`ops_of_kind` the
nodes of some op kinds in that order, both computed once per graph (a rule about transposed
convolutions never walks the other 30k nodes); :func:`node_table` gives the node dicts without
the ``g.nodes[...]`` view's per-lookup cost, for loops over every node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import networkx as nx

OP_KINDS = frozenset(
    {
        "input",
        "conv",
        "conv_transpose",
        "max_pool",
        "avg_pool",
        "lp_pool",
        "adaptive_pool",
        "global_pool",
        "upsample",
        "pad",
        "slice",
        "add",
        "sub",
        "mul",
        "div",
        "concat",
        "flatten",
        "reshape",
        "linear",
        "norm",
        "pointwise",
        "pixel_shuffle",
        "pixel_unshuffle",
        # token layouts (attrs.extra documents each; see archlint.passes.provenance)
        "permute",  # extra["perm"]: output dim i is input dim perm[i] (transpose, movedim)
        "matmul",  # A @ B over the last two dims; extra["weight"]: a parameter operand
        "einsum",  # extra["equation"], extra["operands"]: "act" or a constant's shape each
        "attention",  # SDPA / nn.MultiheadAttention: inputs q, k, v; extra["seq_dim"] of k
        "softmax",  # attrs.axis: the dim it normalizes over
        "reduce",  # mean/sum/amax over extra["dims"] (not all spatial axes), extra["keepdim"]
        "index",  # x[0], x[:, 0], x[:, 1:]: extra["index"] per dim
        "expand",  # broadcast size-1 dims (Tensor.expand)
        "roll",  # extra["shifts"], extra["dims"]: a cyclic shift
        "split",  # chunk/split/unbind along extra["split_dim"] (a dim past channels)
        "output",
        "unknown",
    }
)

#: Elementwise ops with two tensor operands: every spatial axis must agree (or broadcast).
ELEMENTWISE_MERGES = frozenset({"add", "sub", "mul", "div"})
#: Ops that join branches.
MERGES = ELEMENTWISE_MERGES | {"concat"}
#: Ops with a sliding window over the spatial axes.
WINDOWED = frozenset({"conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool"})


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding's fix goes: a file:line, and the module qualname or ONNX node name."""

    file: str | None
    line: int | None
    node: str

    def __str__(self) -> str:
        if self.file is None:
            return self.node
        return f"{self.file}:{self.line}" if self.line else self.file


_new_object = object.__new__
_set_file, _set_line, _set_node = Location.file.__set__, Location.line.__set__, Location.node.__set__  # type: ignore[attr-defined]


def new_location(file: str | None, line: int | None, node: str) -> Location:
    """``Location(file, line, node)``, the same record, at half the cost: the frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (a frontend makes one per node)."""
    loc = _new_object(Location)
    _set_file(loc, file)
    _set_line(loc, line)
    _set_node(loc, node)
    return loc


@dataclass(frozen=True, slots=True)
class Attrs:
    """Op attributes, normalized per spatial axis (one entry per spatial axis)."""

    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    #: (begin, end) zero-padding per spatial axis, after resolving 'same'/auto_pad.
    padding: tuple[tuple[int, int], ...] = ()
    output_padding: tuple[int, ...] = ()
    groups: int = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    #: 'zeros', 'reflect', 'replicate', 'circular' (conv padding_mode or pad mode).
    padding_mode: str = "zeros"
    #: What the user wrote: torch 'same'/'valid' string padding, or ONNX auto_pad. '' if explicit.
    auto_pad: str = ""
    in_channels: int | None = None
    out_channels: int | None = None
    bias: bool | None = None
    #: upsample: per-axis scale factors, or a fixed target size; adaptive_pool: output size
    #: per axis (None = keep that axis).
    scale: tuple[float, ...] | None = None
    size: tuple[int | None, ...] | None = None
    #: upsample: the target size is the spatial size of this producer node (``size=skip.shape[2:]``).
    size_from: str | None = None
    mode: str = ""
    align_corners: bool | None = None
    #: concat axis (negative allowed), flatten start axis.
    axis: int | None = None
    #: flatten end axis.
    end_axis: int | None = None
    #: reshape/view target as written: ints (may hold -1), and None for an entry computed at
    #: run time from a tensor's size (``x.view(x.size(0), -1)`` -> ``(None, -1)``).
    target_shape: tuple[int | None, ...] | None = None
    #: linear / matmul weight geometry.
    in_features: int | None = None
    out_features: int | None = None
    #: slice: (start, stop, step) per spatial axis, None entries as in Python slicing.
    slices: tuple[tuple[int | None, int | None, int], ...] | None = None
    #: pixel_shuffle / pixel_unshuffle / DepthToSpace factor.
    factor: int | None = None
    #: token layouts: a constant operand (parameter or buffer) of an elementwise op or concat,
    #: as ``extra["constant"] = {"name", "shape", "adapts", "slot"}`` (set by the frontends;
    #: ``adapts`` is True when it is resized from an activation's size at run time).
    #: anything else a rule may want for its message (frontend-specific, documented where set).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


#: The attrs of an op that has none: one shared record (Attrs is frozen; nobody writes ``extra``
#: after a frontend built it), not one ~300-byte record per node.
NO_ATTRS = Attrs()


def new_graph(name: str, target: str | None, frontend: str) -> nx.DiGraph:
    import networkx as nx  # lazily: `archlint --help` and the reporters need no graph library

    g = nx.DiGraph()
    g.graph.update(
        name=name,
        target=target,
        frontend=frontend,
        input_shapes=[],
        input_assumed=False,
        capture_note=None,
    )
    return g


def add_op(
    g: nx.DiGraph,
    name: str,
    op: str,
    *,
    inputs: tuple[str, ...] | list[str] = (),
    attrs: Attrs | None = None,
    shapes: tuple[tuple[int, ...], ...] | None = None,
    location: Location | None = None,
    origin: str = "",
    error: str | None = None,
) -> str:
    """Add one op node and its input edges. Raises ValueError on an unknown kind or input."""
    if op not in OP_KINDS:
        raise ValueError(f"unknown op kind {op!r} for node {name!r}")
    nodes = g._node
    if name in nodes:
        raise ValueError(f"duplicate node name {name!r}")
    for src in inputs:
        if src not in nodes:
            raise ValueError(f"node {name!r} reads {src!r}, which is not in the graph")
    data = {
        "op": op,
        "origin": origin,
        "inputs": tuple(inputs),
        "attrs": attrs if attrs is not None else NO_ATTRS,
        "shapes": None if shapes is None else int_shapes(shapes),
        "location": location if location is not None else Location(None, None, name),
        "error": error,
    }
    if type(g) is not (_DIGRAPH or _plain_digraph()):  # a subclass may have its own dicts
        g.add_node(name, **data)
        for slot, src in enumerate(inputs):
            if g.has_edge(src, name):
                g.edges[src, name]["slots"].append(slot)
            else:
                g.add_edge(src, name, slots=[slot])
        return name
    _insert(nodes, g._succ, g._pred, name, data, inputs)
    cache = getattr(g, "__networkx_cache__", None)
    if cache:
        cache.clear()
    return name


def _insert(nodes: dict, succ: dict, pred: dict, name: str, data: dict[str, Any],
            inputs: tuple[str, ...] | list[str]) -> None:
    """What DiGraph.add_node/add_edge do, minus their per-call checks (a large ONNX graph adds
    tens of thousands of nodes); the node store stays exactly networkx's."""
    nodes[name] = data
    succ[name] = {}
    into = pred[name] = {}
    for slot, src in enumerate(inputs):
        edge = into.get(src)
        if edge is not None:
            edge["slots"].append(slot)
        else:
            into[src] = succ[src][name] = {"slots": [slot]}


def int_shapes(shapes: Any) -> tuple[tuple[int, ...], ...]:
    """Output shapes as ``add_op`` stores them: tuples of Python ints, one shared tuple per
    distinct shape."""
    if type(shapes) is tuple and len(shapes) == 1:
        return (_int_shape(shapes[0]),)
    return tuple(_int_shape(s) for s in shapes)


class OpWriter:
    """Adds ops to a plain ``DiGraph`` from :func:`new_graph`, for a frontend that adds tens of
    thousands: the node dicts and edges ``add_op`` writes, without its per-call checks.

    The caller guarantees what ``add_op`` checks: every input is already in the graph (so the
    insertion order stays topological), names are new, ``shapes`` come from :func:`int_shapes`
    and ``inputs`` is a tuple. :meth:`finish` records that order, so nobody re-checks it.
    """

    __slots__ = ("g", "_node", "_succ", "_pred")

    def __init__(self, g: nx.DiGraph):
        if type(g) is not (_DIGRAPH or _plain_digraph()):
            raise TypeError("OpWriter writes networkx's own dicts: a plain DiGraph only")
        self.g = g
        self._node, self._succ, self._pred = g._node, g._succ, g._pred

    def add(
        self,
        name: str,
        op: str,
        inputs: tuple[str, ...],
        attrs: Attrs,
        shapes: tuple[tuple[int, ...], ...] | None,
        location: Location,
        origin: str,
        error: str | None,
    ) -> None:
        if op not in OP_KINDS:
            raise ValueError(f"unknown op kind {op!r} for node {name!r}")
        _insert(self._node, self._succ, self._pred, name, {
            "op": op, "origin": origin, "inputs": inputs, "attrs": attrs, "shapes": shapes,
            "location": location, "error": error,
        }, inputs)

    def finish(self) -> None:
        """Call once the graph is complete, every node added by ``add_op`` or :meth:`add` (each
        after its inputs): the insertion order is the topological order :func:`ops` returns."""
        g = self.g
        cache = getattr(g, "__networkx_cache__", None)
        if cache:
            cache.clear()
        data = g._node
        g.graph["_topological_order"] = _Order(graph_stamp(g), list(data), data)


#: shape -> the same dims as Python ints, one shared tuple per distinct shape (a large graph
#: repeats a few shapes, and the nodes then share one tuple)
_INT_SHAPES: dict[tuple[Any, ...], tuple[int, ...]] = {}


def _int_shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is not tuple:
        return tuple(map(int, shape))
    found = _INT_SHAPES.get(shape)
    if found is None:
        found = tuple(map(int, shape))
        if len(_INT_SHAPES) > 10_000:
            _INT_SHAPES.clear()
        _INT_SHAPES[shape] = found
    return found


#: networkx's DiGraph, once imported (add_op runs once per node: no import statement there)
_DIGRAPH: type | None = None


def _plain_digraph() -> type:
    global _DIGRAPH
    import networkx as nx

    _DIGRAPH = nx.DiGraph
    return _DIGRAPH


class _Order:
    """One topological order of a graph, computed once: the names, each name's rank, the
    names of each op kind in that order, and those grouped by attrs record (built on first use)."""

    __slots__ = ("key", "names", "_rank", "_by_kind", "_by_record", "_data")

    def __init__(self, key: tuple[int, int], names: list[str], data: Any):
        self.key = key
        self.names = names
        self._data = data
        self._rank: dict[str, int] | None = None
        self._by_kind: dict[str, list[str]] | None = None
        self._by_record: dict[str, list[tuple[Any, list[str]]]] = {}

    def rank(self) -> dict[str, int]:
        if self._rank is None:
            self._rank = {n: i for i, n in enumerate(self.names)}
        return self._rank

    def of_kinds(self, kinds: tuple[str, ...]) -> list[str]:
        if self._by_kind is None:
            by_kind: dict[str, list[str]] = {}
            data = self._data
            for n in self.names:
                op = data[n]["op"]
                if op in by_kind:
                    by_kind[op].append(n)
                else:
                    by_kind[op] = [n]
            self._by_kind = by_kind
        lists = [found for k in set(kinds) if (found := self._by_kind.get(k))]
        if len(lists) <= 1:  # one kind present: already in order, no sort
            return list(lists[0]) if lists else []
        rank = self.rank()
        return sorted((n for names in lists for n in names), key=rank.__getitem__)

    def records_of(self, kind: str) -> list[tuple[Any, list[str]]]:
        """(attrs record, its nodes in order) for the nodes of one kind, grouped by identity."""
        groups = self._by_record.get(kind)
        if groups is None:
            by_record: dict[int, tuple[Any, list[str]]] = {}
            data = self._data
            for name in self.of_kinds((kind,)):
                attrs = data[name]["attrs"]
                group = by_record.get(id(attrs))  # the graph keeps each record alive: ids are unique
                if group is None:
                    by_record[id(attrs)] = (attrs, [name])
                else:
                    group[1].append(name)
            groups = self._by_record[kind] = list(by_record.values())
        return groups


def graph_stamp(g: nx.DiGraph) -> tuple[int, int]:
    """What tells a stale per-graph index: add_op adds a node with its edges, so the node count
    (and which node store: a subgraph view shares g.graph with its parent) changes; counting
    edges would cost O(E)."""
    return (len(g), id(g._node))


def _order(g: nx.DiGraph) -> _Order:
    data = g._node
    key = graph_stamp(g)
    cached = g.graph.get("_topological_order")
    if cached is None or cached.key != key:
        rank = {n: i for i, n in enumerate(g.nodes)}
        if all(rank[u] < rank[v] for u, v in g.edges):
            names = list(g.nodes)
        else:
            import networkx as nx

            names = list(nx.lexicographical_topological_sort(g, key=rank.__getitem__))
        cached = _Order(key, names, data)
        g.graph["_topological_order"] = cached
    return cached


def ops(g: nx.DiGraph) -> Iterator[str]:
    """Node names in topological order, computed once per graph.

    ``add_op`` only accepts inputs that already exist, so insertion order is topological; that is
    checked once (O(edges)) and a real sort is used only for a graph built some other way. A
    frontend that ends with :meth:`OpWriter.finish` skips the check. The order is cached in
    ``g.graph`` because every rule walks it (a sort per rule dominated the time on 30k-node
    graphs).
    """
    return iter(_order(g).names)


def ops_of_kind(g: nx.DiGraph, *kinds: str) -> list[str]:
    """The nodes whose ``op`` is one of ``kinds``, in topological order.

    The per-kind index is built once per graph, so a rule about transposed convolutions never
    walks the other 30k nodes of a large graph.
    """
    return _order(g).of_kinds(kinds)


def records_of_kinds(g: nx.DiGraph, *kinds: str) -> list[tuple[Any, list[str]]]:
    """The nodes of ``kinds`` grouped by op kind and attrs record (by identity), each group in
    topological order; computed once per graph and kind, as :func:`ops_of_kind` is."""
    order = _order(g)
    return [group for kind in dict.fromkeys(kinds) for group in order.records_of(kind)]


def topological_rank(g: nx.DiGraph) -> dict[str, int]:
    """Each node's position in :func:`ops` order (shared; do not modify)."""
    return _order(g).rank()


def node_table(g: nx.DiGraph) -> dict[str, dict[str, Any]]:
    """name -> attribute dict, the same dicts ``g.nodes[name]`` returns, without the view's
    per-lookup cost (hot loops over every node of a large graph read through this)."""
    return g._node


def output_shape(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    """The first output shape of a node, or None when unknown."""
    shapes = g._node[name]["shapes"]
    return shapes[0] if shapes else None


def spatial(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """Spatial sizes of an NC* shape (None for rank < 3 or unknown)."""
    if shape is None or len(shape) < 3:
        return None
    return tuple(shape[2:])


def input_nodes(g: nx.DiGraph) -> list[str]:
    return ops_of_kind(g, "input")
