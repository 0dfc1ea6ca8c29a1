"""Axis provenance and fields through a constant index over positions (``x[:, idx]``,
``index_select``, ``gather`` with one list repeated over the other dims, ONNX ``Gather``).

The frontends keep an index's values when they can read them (a buffer of a real model, an
ONNX initializer): ``("tensor", values)``; ``("tensor",)`` when they cannot (built on the meta
device, computed in forward), which leaves the provenance unknown, never a guess.

The values are read as mixed-radix numbers over the indexed dim's digits. When they are the
Cartesian product, in order, of one arithmetic progression per digit (every other token, a
crop, a strided row), each digit the index thins becomes a digit of a new map named after the
index node: its position ``j`` is the old position ``start + j*step``, so its field is exact
(:func:`pick_fields`). A thinned digit must be a whole axis that no other dim carries (else the
new map would leave the other dim's positions behind). Anything else: unknown.
"""

from __future__ import annotations

import itertools
import math

from archlint.passes.field_grid import _window
from archlint.passes.provenance_dims import Digit, Dim, _plain

#: (source (map, axis), new (map, axis), start, step) per thinned digit
Pick = tuple[tuple[str, int], tuple[str, int], int, int]


def pick_dim(name: str, dim: Dim, values: tuple[int, ...], others: list[Dim]
             ) -> tuple[Dim, list[Pick]] | None:
    """The dim that ``dim[values]`` makes, and the digits it thinned."""
    n = dim.size
    if dim.digits is None or any(not -n <= v < n for v in values):
        return None
    values = tuple(v % n for v in values)
    if not dim.spatial:
        return _plain(len(values)), []
    if dim.prefix:
        if min(values) < dim.prefix:
            return None  # a class token picked with positions: no mixed radix
        values = tuple(v - dim.prefix for v in values)
    digits = [d for d in dim.digits if d.size != 1]
    coords = [_radix(v, digits) for v in values]
    seqs = [list(dict.fromkeys(c[t] for c in coords)) for t in range(len(digits))]
    if coords != [tuple(c) for c in itertools.product(*seqs)]:
        return None  # not a product of one progression per digit
    out: list[Digit] = []
    picks: list[Pick] = []
    for d, seq in zip(digits, seqs):
        if seq == list(range(d.size)):
            out.append(d)
            continue
        if d.axis is None:
            out.append(Digit(len(seq)))
            continue
        step = seq[1] - seq[0] if len(seq) > 1 else 1
        if step < 1 or seq != list(range(seq[0], seq[0] + step * len(seq), step)):
            return None
        key = (d.map, d.axis)
        carriers = [x for o in [dim, *others] for x in o.spatial if (x.map, x.axis) == key]
        if d.step != 1 or d.size != d.extent or len(carriers) != 1:
            return None
        out.append(Digit(len(seq), d.axis, name, 1, len(seq), False))
        picks.append((key, (name, d.axis), seq[0], step))
    if math.prod(x.size for x in out) != len(values):
        return None
    return Dim(len(values), tuple(x for x in out if x.size != 1)), picks


def _radix(v: int, digits: list[Digit]) -> tuple[int, ...]:
    out = []
    for d in reversed(digits):
        v, r = divmod(v, d.size)
        out.append(r)
    return tuple(reversed(out))


def picks_of(name: str, items, first: tuple[Dim, ...]) -> list[Pick] | None:
    """The thinned digits of an index node (for the fields), as :func:`pick_dim` found them."""
    for k, it in enumerate(items):
        if it[0] == "tensor" and len(it) > 1:
            pos = sum(1 for x in items[:k] if x[0] in ("int", "slice"))
            if any(x[0] == "ellipsis" for x in items[:k]):
                pos = len(first) - sum(1 for x in items if x[0] in ("int", "slice", "tensor")) + pos
            dim = first[pos]
            others = [d for j, d in enumerate(first) if j != pos]
            found = pick_dim(name, dim, it[1], others)
            return None if found is None else found[1]
    return []


def pick_fields(fields: dict, picks: list[Pick]) -> None:
    """The new map's position ``j`` reads the old position ``start + j*step``."""
    for src, new, start, step in picks:
        state = fields.get(src)
        fields[new] = _window(state, 1, step, -start) if isinstance(state, tuple) else state
