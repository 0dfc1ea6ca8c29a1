"""Inline SVG for the HTML report: receptive-field growth and the admissible-sizes strip."""

from __future__ import annotations

import html
import math
from fractions import Fraction
from typing import Any

import networkx as nx

PLOT_W, PLOT_H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 240, 56, 16, 16, 34


def longest_path(g: nx.DiGraph) -> list[str]:
    """The longest chain of ops from an input to an output (the network's depth)."""
    if len(g) == 0:
        return []
    return list(nx.dag_longest_path(g))


def rf_plot_svg(g: nx.DiGraph, input_shapes: list[tuple[int, ...]]) -> str:
    """RF size and effective stride (first spatial axis, log scale) with depth along the longest
    path, and the input size as a dashed line. Unknown fields leave gaps, never guesses."""
    path = longest_path(g)
    points = []
    for depth, name in enumerate(path):
        rf = g.nodes[name].get("rf")
        axis = rf[0] if rf else None
        if axis is not None:
            points.append((depth, int(axis.size), Fraction(axis.stride)))
        else:
            points.append((depth, None, None))
    known = [p for p in points if p[1] is not None]
    input_size = None
    if input_shapes and len(input_shapes[0]) >= 3:
        input_size = int(input_shapes[0][2])
    if not known:
        return ('<svg id="rf-plot" class="plot" data-points="0" width="640" height="40" '
                'xmlns="http://www.w3.org/2000/svg"><text x="8" y="24">receptive field unknown '
                'along the longest path</text></svg>')
    top = max([p[1] for p in known] + [float(p[2]) for p in known] + [input_size or 1, 2])
    bottom = min([float(p[2]) for p in known] + [1])
    lo, hi = math.log2(bottom), math.log2(top) * 1.05 + 0.01
    n = max(len(points) - 1, 1)

    def x(depth: int) -> float:
        return PAD_L + (PLOT_W - PAD_L - PAD_R) * depth / n

    def y(value: float) -> float:
        return PAD_T + (PLOT_H - PAD_T - PAD_B) * (1 - (math.log2(value) - lo) / (hi - lo))

    def polyline(index: int, cls: str) -> str:
        runs, current = [], []
        for p in points:
            if p[index] is None:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append(f"{x(p[0]):.1f},{y(float(p[index])):.1f}")
        if current:
            runs.append(current)
        return "".join(f'<polyline class="{cls}" points="{" ".join(r)}"/>' for r in runs)

    ticks = []
    value = 2 ** math.floor(lo)
    while value <= top * 1.05:
        if value >= bottom:
            ticks.append(f'<line class="grid" x1="{PAD_L}" x2="{PLOT_W - PAD_R}" y1="{y(value):.1f}" '
                         f'y2="{y(value):.1f}"/><text class="tick" x="{PAD_L - 6}" y="{y(value) + 4:.1f}" '
                         f'text-anchor="end">{_short(value)}</text>')
        value *= 4 if top > 4096 else 2
    parts = [
        f'<svg id="rf-plot" class="plot" data-points="{len(known)}" viewBox="0 0 {PLOT_W} {PLOT_H}" '
        f'width="{PLOT_W}" height="{PLOT_H}" xmlns="http://www.w3.org/2000/svg" role="img">',
        "<title>Receptive field size and stride with depth along the longest path</title>",
        *ticks,
        polyline(1, "rf-size"),
        polyline(2, "rf-stride"),
    ]
    if input_size:
        parts.append(f'<line class="input-line" x1="{PAD_L}" x2="{PLOT_W - PAD_R}" '
                     f'y1="{y(input_size):.1f}" y2="{y(input_size):.1f}"/>'
                     f'<text class="label" x="{PLOT_W - PAD_R}" y="{y(input_size) - 4:.1f}" '
                     f'text-anchor="end">input {input_size}</text>')
    parts.append(f'<text class="tick" x="{PAD_L}" y="{PLOT_H - 8}">depth 0</text>'
                 f'<text class="tick" x="{PLOT_W - PAD_R}" y="{PLOT_H - 8}" text-anchor="end">'
                 f'depth {len(points) - 1} ({html.escape(path[-1])})</text>'
                 f'<text class="legend rf-size-text" x="{PLOT_W - PAD_R - 110}" y="{PLOT_H - 40}">RF size</text>'
                 f'<text class="legend rf-stride-text" x="{PLOT_W - PAD_R - 50}" y="{PLOT_H - 40}">stride</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    if value >= 1:
        return str(int(value))
    return f"1/{int(round(1 / value))}"


STRIP_W, STRIP_H = 640, 46


def sizes_strip_svg(admissible: dict[str, Any] | None, input_shapes: list[tuple[int, ...]],
                    summary_text: str | None) -> str:
    """One cell per square input size n from 1 up: admissible, failing or undecided."""
    if not admissible or "square" not in admissible:
        text = html.escape(summary_text or "admissible sizes unknown")
        return (f'<svg id="sizes-strip" class="plot" data-sizes="0" width="{STRIP_W}" height="24" '
                f'xmlns="http://www.w3.org/2000/svg"><text x="4" y="16">{text}</text></svg>')
    from archlint.passes.sizes import expand_progressions

    lo, hi = admissible["range"]
    example = int(input_shapes[0][2]) if input_shapes and len(input_shapes[0]) >= 3 else None
    shown_hi = min(hi, max(256, 2 * (example or 0)))
    ok = expand_progressions(admissible["square"], lo, shown_hi)
    undecided = expand_progressions((admissible.get("undecided") or {}).get("square", []), lo, shown_hi)
    count = shown_hi - lo + 1
    cell = (STRIP_W - 8) / count
    rects = []
    run_start, run_kind = 0, None
    kinds = ["ok" if ok[i] else "undecided" if undecided[i] else "fail" for i in range(count)]
    for i, kind in enumerate(kinds + [None]):
        if kind != run_kind:
            if run_kind is not None:
                rects.append(f'<rect class="{run_kind}" x="{4 + run_start * cell:.2f}" y="4" '
                             f'width="{max((i - run_start) * cell, 0.6):.2f}" height="22">'
                             f'<title>{lo + run_start}..{lo + i - 1}: {run_kind}</title></rect>')
            run_start, run_kind = i, kind
    marks = ""
    if example and lo <= example <= shown_hi:
        mx = 4 + (example - lo + 0.5) * cell
        marks = (f'<line class="example" x1="{mx:.2f}" x2="{mx:.2f}" y1="1" y2="29"/>'
                 f'<text class="tick" x="{mx:.2f}" y="42" text-anchor="middle">{example}</text>')
    return (f'<svg id="sizes-strip" class="plot" data-sizes="{int(ok.sum())}" '
            f'viewBox="0 0 {STRIP_W} {STRIP_H}" width="{STRIP_W}" height="{STRIP_H}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img"><title>square input sizes {lo}..{shown_hi}'
            f'</title>{"".join(rects)}{marks}<text class="tick" x="4" y="42">{lo}</text>'
            f'<text class="tick" x="{STRIP_W - 4}" y="42" text-anchor="end">{shown_hi}</text></svg>')
