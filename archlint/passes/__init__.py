"""Passes: each reads the graph and writes typed facts; none judges.

``run_passes(g)`` runs them in order: shapes check, receptive field, input-size sweep.
"""

from __future__ import annotations

import networkx as nx


def run_passes(g: nx.DiGraph, sizes_range: tuple[int, int] = (1, 4096)) -> None:
    from archlint.passes.receptive_field import receptive_field_pass

    receptive_field_pass(g)
