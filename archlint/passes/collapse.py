"""Windows larger than their padded input: the map shrinks to nothing at the example size.

``collapse_pass(g)`` writes ``g.nodes[n]["collapsed_axes"]`` on every node: a tuple of
``(axis, padded input size, kernel extent)`` per spatial axis on which a conv/pool output is
empty at the example size, ``()`` otherwise. Only ops that failed at the example input
(``error`` set) or produced an empty map count: a ceil-mode pool whose window hangs off a tiny
map still yields one output. spatial-collapse (AL204) reports it; shape-propagation-error
defers to it there.
"""

from __future__ import annotations

import networkx as nx

from archlint.graph import ops_of_kind, output_shape, spatial
from archlint.passes.fact_index import indexed, record
from archlint.passes.windows import windows_of

COLLAPSING_OPS = frozenset({"conv", "max_pool", "avg_pool", "lp_pool", "conv_transpose"})
#: g.graph key of the nodes with collapsed axes (archlint.passes.fact_index)
COLLAPSED_INDEX = "_collapsed_nodes"


def _collapsed(g: nx.DiGraph, name: str) -> tuple[tuple[int, int, int], ...]:
    node = g._node[name]
    if node["op"] not in COLLAPSING_OPS:
        return ()
    size_out = node["shapes"][0][2:] if node["shapes"] and node["shapes"][0] else None
    if node["error"] is None and not (size_out and min(size_out) <= 0):
        return ()
    size_in = spatial(output_shape(g, node["inputs"][0])) if node["inputs"] else None
    wins = windows_of(node["attrs"])
    if size_in is None or not wins or len(wins) != len(size_in):
        return ()
    found = []
    for axis, (n, w) in enumerate(zip(size_in, wins)):
        if node["op"] == "conv_transpose":
            out_pad = node["attrs"].output_padding[axis] if node["attrs"].output_padding else 0
            if (n - 1) * w.stride - w.total_pad + w.extent + out_pad <= 0:
                found.append((axis, n, w.extent))
        elif n + w.total_pad < w.extent:
            found.append((axis, n + w.total_pad, w.extent))
    return tuple(found)


def collapse_pass(g: nx.DiGraph) -> None:
    """Write ``collapsed_axes`` on every node (see the module docs)."""
    table = g._node
    for data in table.values():
        data["collapsed_axes"] = ()  # what _collapsed says for every other op
    collapsed = []
    for name in ops_of_kind(g, *COLLAPSING_OPS):
        found = table[name]["collapsed_axes"] = _collapsed(g, name)
        if found:
            collapsed.append(name)
    record(g, COLLAPSED_INDEX, collapsed)


def collapsed_nodes(g: nx.DiGraph) -> list[str]:
    """The nodes with collapsed axes, in topological order (running the pass if needed)."""
    return indexed(g, COLLAPSED_INDEX, collapse_pass)


def collapsed_axes(g: nx.DiGraph, name: str) -> list[tuple[int, int, int]]:
    """A node's ``collapsed_axes`` as a list (running the pass on a graph that has not had it)."""
    found = g._node[name].get("collapsed_axes")
    if found is None:
        collapse_pass(g)
        found = g._node[name]["collapsed_axes"]
    return list(found)
