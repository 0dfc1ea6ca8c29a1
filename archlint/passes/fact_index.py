"""Which nodes carry a fact worth reading.

A window-fact pass writes its fact on every node, nearly always the "nothing here" default. It
also records the few nodes where it found something, so the rule that reports the fact visits
those instead of every conv or merge of a large graph. An index belongs to the graph it was
made for: a node added since makes it stale, and the accessor then runs the pass again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from archlint.graph import graph_stamp

if TYPE_CHECKING:
    import networkx as nx


def record(g: nx.DiGraph, key: str, names: list[str]) -> None:
    """Keep ``names`` (in topological order) as the nodes with fact ``key``."""
    g.graph[key] = (graph_stamp(g), names)


def recorded(g: nx.DiGraph, key: str) -> list[str] | None:
    """The names :func:`record` kept for ``key``, or None when there are none for this graph."""
    found: Any = g.graph.get(key)
    return found[1] if found is not None and found[0] == graph_stamp(g) else None


def indexed(g: nx.DiGraph, key: str, run_pass: Callable[[nx.DiGraph], None]) -> list[str]:
    """The nodes recorded for ``key``, running ``run_pass`` first when there are none."""
    names = recorded(g, key)
    if names is None:
        run_pass(g)
        names = recorded(g, key) or []
    return names
