"""Passes: each reads the graph and writes typed facts; none judges.

``run_passes(g, sizes_range)`` runs them in order:

1. :func:`archlint.passes.provenance.provenance_pass`: ``provenance`` (which input spatial axes
   each dimension carries) on every node;
   :func:`archlint.passes.receptive_field.receptive_field_pass`: ``rf``, ``rf_global``,
   ``rf_global_axes``, ``rf_global_cause`` and ``rf_aligned`` on every node (through token
   layouts with :mod:`archlint.passes.token_fields`);
2. :func:`archlint.passes.sizes.input_size_pass`: ``g.graph["sizes"]`` (a ``SizeSweep``),
   ``g.graph["admissible_sizes"]`` (JSON) and ``g.graph["sizes_summary"]`` (one line);
3. facts the rules share on window geometry and merges:
   :func:`archlint.passes.strided_rounding.rounding_pass` (``rounding``),
   :func:`archlint.passes.collapse.collapse_pass` (``collapsed_axes``) and
   :func:`archlint.passes.merge_mismatch.merge_mismatch_pass` (``size_mismatch``,
   ``size_mismatch_cause``, ``breaks_merge``; it reads the sweep of step 2).

No pass raises for a graph it cannot model (facts become "unknown"); should one fail on an
internal bug, its facts are None and ``g.graph["passes_error"]`` says why, so the rules that need
none still run.

The exact shapes at the example input come from the frontends (``shapes`` on each node); the
per-op formulas both passes build on live in :mod:`archlint.passes.formulas`.
"""

from __future__ import annotations

import networkx as nx


def run_passes(g: nx.DiGraph, sizes_range: tuple[int, int] = (1, 4096)) -> None:
    from archlint.passes.receptive_field import receptive_field_pass
    from archlint.passes.sizes import input_size_pass

    from archlint.passes.provenance import provenance_pass

    try:
        provenance_pass(g)
    except Exception as exc:
        for name in g.nodes:
            g.nodes[name]["provenance"] = None
        g.graph["passes_error"] = f"provenance pass: {type(exc).__name__}: {exc}"
    try:
        receptive_field_pass(g)
    except Exception as exc:  # a bug here must not hide the findings that need no field
        for name in g.nodes:
            g.nodes[name].update(rf=None, rf_global=False, rf_aligned=None, rf_global_axes=(),
                                 rf_global_cause=None)
        g.graph["passes_error"] = f"receptive field pass: {type(exc).__name__}: {exc}"
    try:
        input_size_pass(g, sizes_range)
    except Exception as exc:
        g.graph.update(sizes=None, admissible_sizes=None)
        g.graph["sizes_summary"] = f"sizes unknown (internal error in the size sweep: {type(exc).__name__})"
        g.graph["passes_error"] = f"input-size sweep: {type(exc).__name__}: {exc}"
    _window_facts(g)


def _window_facts(g: nx.DiGraph) -> None:
    """The facts the rules share about window geometry and merges (after the sizes pass: the
    merge check reads its sweep)."""
    from archlint.passes.collapse import COLLAPSED_INDEX, collapse_pass
    from archlint.passes.fact_index import record
    from archlint.passes.merge_mismatch import MISMATCH_INDEX, merge_mismatch_pass
    from archlint.passes.strided_rounding import ROUNDING_INDEX, rounding_pass

    for run, index, keys in ((rounding_pass, ROUNDING_INDEX, {"rounding": None}),
                             (collapse_pass, COLLAPSED_INDEX, {"collapsed_axes": ()}),
                             (merge_mismatch_pass, MISMATCH_INDEX,
                              {"size_mismatch": (), "size_mismatch_cause": None,
                               "breaks_merge": None})):
        try:
            run(g)
        except Exception as exc:
            for name in g.nodes:
                g.nodes[name].update(keys)
            record(g, index, [])  # the rules read the defaults, not a second failing run
            g.graph["passes_error"] = f"{run.__name__}: {type(exc).__name__}: {exc}"
