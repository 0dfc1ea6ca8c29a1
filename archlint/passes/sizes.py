"""The input-size sweep: every tensor's size as a function of the input size, at all sizes at once.

Public API
----------
``input_size_pass(g, sizes_range=(1, 4096))`` writes:

``g.graph["sizes"]``: a :class:`SizeSweep` (below);
``g.graph["admissible_sizes"]``: JSON, ``{"range": [lo, hi], "square": [...], <axis>: [...]}``
    where each list holds progressions ``{"start": a, "stop": b, "step": k}`` meaning
    ``a, a+k, a+2k, ... < b`` (stop exclusive), or through ``hi`` when ``stop`` is null (the
    pattern holds to the end of the range). Their union is exactly the admissible set within
    the range. ``square`` sweeps every spatial axis of every input together (H = W = n); the
    per-axis keys sweep one axis with the others at the example size: ``height``/``width`` for
    2-d inputs, ``depth``/``height``/``width`` for 3-d, ``length`` for 1-d (the same as
    ``square`` there). None when no input has spatial axes.
``g.graph["sizes_summary"]``: one line, e.g.
    ``"H = W: n >= 32 with n % 32 == 0; smallest 32; example 224 admissible"``.

A size is admissible when every op gets a valid input (no size below 1, no kernel larger than
its padded input, the pool padding rule, a linear layer's in_features equal to the features it
is fed, a fixed reshape whose element count matches, ...) and every merge agrees. A merge that
agrees only because a 1-pixel branch broadcasts does NOT agree (at another size that branch
would not be 1 pixel); a dimension that is 1 at every input size (global or adaptive pooling
to 1, as in squeeze-and-excitation) broadcasts fine.

:class:`SizeSweep`
    ``lo``, ``hi``, ``sizes`` (int64 array), ``sweeps`` (names), ``admissible`` (bool array,
    square sweep), ``admissible_for(sweep)``, ``spatial(node, sweep="square")`` (a tuple of
    int64 arrays, one per spatial axis of the node's output, <= 0 where undefined; None when
    the node has no spatial axes or its size is unknown), ``invalid_at(node, sweep="square")``
    (where that node's own op is invalid or its merge disagrees, given valid inputs),
    ``first_failure(n, sweep="square")`` (the first failing node at size n, or None),
    ``describe(mask)``, ``progressions(mask)``, ``smallest(sweep)``,
    ``nearest(n, sweep) -> (below, above)``, ``complete`` and ``unknown`` (nodes whose size
    function is unknown, with the reason; past them sizes are not checked, so "admissible"
    only means nothing known fails).

How it works: one forward pass in topological order over every node's full shape, where each
dimension is an int (the same at every input size: batch, channels, a pooled 1) or an int64
array over all swept sizes (all sweeps side by side in one array). Formulas are those of
:mod:`archlint.passes.formulas`. Per node it keeps the mask of sizes at which the node's output
exists; an op is judged only where its inputs exist, so the first failure is the cause. Ops
that keep sizes share their input's arrays, so a chain of 30k such nodes costs nothing; once
the retained arrays pass a memory budget, arrays no consumer still needs are dropped, and
``spatial()`` recomputes them on demand from the nearest kept ancestors. Invalid masks are
kept bit-packed and only where some size fails. At the example size the sweep is checked
against the frontend's exact shapes; a node whose formula disagrees becomes unknown, not a
guess.
"""
from __future__ import annotations

import networkx as nx

from archlint.graph import ops
from archlint.passes.progressions import describe_sizes, expand_progressions, progressions
from archlint.passes.size_forward import _Forward
from archlint.passes.size_sweep import SizeSweep, _node_producers

__all__ = [
    "SizeSweep",
    "input_size_pass",
    "progressions",
    "expand_progressions",
    "describe_sizes",
]


# -- the pass -------------------------------------------------------------------------------------


def input_size_pass(g: nx.DiGraph, sizes_range: tuple[int, int] = (1, 4096)) -> SizeSweep | None:
    """Run the sweep and write ``sizes``, ``admissible_sizes`` and ``sizes_summary``."""
    lo, hi = int(sizes_range[0]), int(sizes_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"sizes range {sizes_range}: need 1 <= lo <= hi")
    nodes = g._node  # the node dicts, read once per node without the view's lookups
    # the few nodes that also read another node's size: the others' producers are their inputs
    size_from = {name: _node_producers(nodes, data) for name, data in nodes.items()
                 if data["attrs"].size_from is not None}
    order = list(ops(g))  # the graph's cached topological order
    inputs = [n for n in order if nodes[n]["op"] == "input"]
    input_shapes = _input_shapes(g, inputs)
    axes = max((len(s) - 2 for s in input_shapes.values() if s is not None), default=0)
    if axes <= 0:
        g.graph["sizes"] = None
        g.graph["admissible_sizes"] = None
        g.graph["sizes_summary"] = None
        return None
    sweep = SizeSweep(g, lo, hi, axes)
    _Forward(g, sweep, order, input_shapes, size_from).run()
    from archlint.passes.symbolic_sizes import formula_is_exact, from_formulas, symbolic_size_pass

    if g.graph.get("symbolic_runner") is not None and formula_is_exact(g, sweep):
        sweep.adopt(from_formulas(g, sweep))  # a graph that reads no sizes: formulas are exact
    elif g.graph.get("symbolic_runner") is not None:
        result = symbolic_size_pass(g, lo, hi)
        if result is not None:
            g.graph["symbolic_sizes"] = result
            sweep.adopt(result)
    else:
        sweep.mark_unknown_undecided()
    g.graph["sizes"] = sweep
    g.graph["admissible_sizes"] = sweep.to_json()
    g.graph["sizes_summary"] = sweep.summary()
    return sweep


def _input_shapes(g: nx.DiGraph, inputs: list[str]) -> dict[str, tuple[int, ...] | None]:
    declared = list(g.graph.get("input_shapes") or [])
    out = {}
    for i, name in enumerate(inputs):
        shapes = g.nodes[name].get("shapes")
        shape = shapes[0] if shapes else (tuple(declared[i]) if i < len(declared) else None)
        out[name] = None if shape is None else tuple(int(v) for v in shape)
    return out
