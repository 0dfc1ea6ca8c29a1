"""Passes: each reads the graph and writes typed facts; none judges.

``run_passes(g, sizes_range)`` runs them in order:

1. :func:`archlint.passes.receptive_field.receptive_field_pass`: ``rf``, ``rf_global`` and
   ``rf_aligned`` on every node;
2. :func:`archlint.passes.sizes.input_size_pass`: ``g.graph["sizes"]`` (a ``SizeSweep``),
   ``g.graph["admissible_sizes"]`` (JSON) and ``g.graph["sizes_summary"]`` (one line).

The exact shapes at the example input come from the frontends (``shapes`` on each node); the
per-op formulas both passes build on live in :mod:`archlint.passes.formulas`.
"""

from __future__ import annotations

import networkx as nx


def run_passes(g: nx.DiGraph, sizes_range: tuple[int, int] = (1, 4096)) -> None:
    from archlint.passes.receptive_field import receptive_field_pass
    from archlint.passes.sizes import input_size_pass

    receptive_field_pass(g)
    input_size_pass(g, sizes_range)
