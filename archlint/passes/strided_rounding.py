"""Where a strided conv or pool rounds its output size at the example input.

``rounding_pass(g)`` writes ``g.nodes[n]["rounding"]`` on every node: a :class:`Rounding` for a
strided conv/pool whose stride does not divide its input size (by the criterion documented in
odd-size-stride2, AL104), else None. odd-size-stride2 reports it; skip-connection-mismatch
(AL101) names it as the cause of a merge it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import networkx as nx

from archlint.graph import ops_of_kind, output_shape, spatial
from archlint.passes.fact_index import indexed, record
from archlint.passes.windows import Window, windows_of

STRIDED_OPS = ("conv", "max_pool", "avg_pool", "lp_pool")
AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


@dataclass(frozen=True)
class Rounding:
    """Where a strided layer rounds at the example input, per offending axis."""

    node: str
    axes: tuple[int, ...]  # spatial axis indices that round
    size_in: tuple[int, ...]
    size_out: tuple[int, ...]
    windows: tuple[Window, ...]
    symmetric: bool

    def describe(self) -> str:
        """'57 -> 29 (57/2 = 28.5, rounded up)' per offending axis, axes named when they differ."""
        names = AXIS_NAMES.get(len(self.size_in), tuple(f"axis {i}" for i in range(len(self.size_in))))
        parts = []
        for i in self.axes:
            n, out, s = self.size_in[i], self.size_out[i], self.windows[i].stride
            exact = Fraction(n, s)
            way = "rounded up" if out > exact else "rounded down"
            parts.append((names[i], f"{n} -> {out} ({n}/{s} = {_decimal(exact)}, {way})"))
        if len({text for _, text in parts}) == 1:
            axes = " and ".join(name for name, _ in parts)
            return f"{axes} {parts[0][1]}" if len(parts) > 1 else f"{parts[0][0]} {parts[0][1]}"
        return "; ".join(f"{name} {text}" for name, text in parts)


def _decimal(value: Fraction) -> str:
    return str(int(value)) if value.denominator == 1 else f"{float(value):g}"


#: g.graph key of the nodes that round (archlint.passes.fact_index)
ROUNDING_INDEX = "_rounding_nodes"


def _rounding(g: nx.DiGraph, name: str) -> Rounding | None:
    node = g._node[name]
    if node["op"] not in STRIDED_OPS or not node["inputs"]:
        return None
    wins = windows_of(node["attrs"])
    if not any(w.stride > 1 for w in wins):  # nothing rounds (most convs of a large graph)
        return None
    size_in = spatial(output_shape(g, node["inputs"][0]))
    size_out = spatial(output_shape(g, name))
    if not wins or size_in is None or size_out is None or len(size_in) != len(wins):
        return None
    axes = tuple(i for i, (w, n) in enumerate(zip(wins, size_in)) if w.stride > 1 and w.rounds(n))
    if not axes:
        return None
    symmetric = all(wins[i].symmetric(size_in[i], size_out[i]) for i in axes)
    return Rounding(name, axes, tuple(size_in), tuple(size_out), tuple(wins), symmetric)


def rounding_pass(g: nx.DiGraph) -> None:
    """Write ``rounding`` on every node (see the module docs)."""
    table = g._node
    for data in table.values():
        data["rounding"] = None  # what _rounding says for every other op
    strided: dict[int, bool] = {}  # by attrs record: nodes with equal attributes share one
    rounds = []
    for name in ops_of_kind(g, *STRIDED_OPS):
        attrs = table[name]["attrs"]
        found = strided.get(id(attrs))  # the graph keeps each record alive: ids are unique
        if found is None:
            found = strided[id(attrs)] = any(w.stride > 1 for w in windows_of(attrs))
        if found:  # an unstrided window never rounds
            fact = table[name]["rounding"] = _rounding(g, name)
            if fact is not None:
                rounds.append(name)
    record(g, ROUNDING_INDEX, rounds)


def rounding_nodes(g: nx.DiGraph) -> list[str]:
    """The nodes whose ``rounding`` is set, in topological order (running the pass if needed)."""
    return indexed(g, ROUNDING_INDEX, rounding_pass)


def rounding_at(g: nx.DiGraph, name: str) -> Rounding | None:
    """The ``rounding`` fact of a node (running the pass on a graph that has not had it)."""
    if "rounding" not in g._node[name]:
        rounding_pass(g)
    return g._node[name]["rounding"]
