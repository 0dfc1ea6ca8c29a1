"""The labels of axis provenance: a tensor dimension as mixed-radix digits of input positions.

:mod:`archlint.passes.provenance` writes them on the graph (its docs explain the model); the
types and the small readers the rules use live here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property

import networkx as nx


@dataclass(frozen=True)
class Digit:
    """One mixed-radix digit of a dimension."""

    size: int
    #: input spatial axis (0 = the first spatial axis of the model input), None: no position.
    axis: int | None = None
    #: the map (node name) whose positions it counts
    map: str = ""
    #: positions along the axis per unit of this digit
    step: int = 1
    #: the map's positions along the axis
    extent: int = 1
    #: this digit's count follows the input size
    grows: bool = False


@dataclass(frozen=True)
class Dim:
    """One tensor dimension: ``prefix`` position-free entries, then the digits' positions."""

    size: int
    digits: tuple[Digit, ...] | None
    prefix: int = 0

    # cached: the passes and rules ask these of the same dims many times (a frozen dataclass
    # still takes a cached_property, which writes the instance dict directly)
    @cached_property
    def spatial(self) -> tuple[Digit, ...]:
        return tuple(d for d in self.digits or () if d.axis is not None)

    @cached_property
    def plain_digit(self) -> Digit | None:
        """See :func:`plain_map`."""
        if self.prefix or self.digits is None:
            return None
        spatial = [d for d in self.digits if d.size != 1]
        if len(spatial) != 1 or spatial[0].axis is None:
            return None
        d = spatial[0]
        return d if d.step == 1 and d.size == d.extent else None


_new = object.__new__


def new_digit(size: int, axis: int | None, map: str, step: int, extent: int,
              grows: bool) -> Digit:
    """``Digit(...)`` without the frozen dataclass's per-field ``object.__setattr__`` (a map op
    makes one per axis on every node); the same instance dict, so equal and hashed alike."""
    d = _new(Digit)
    state = d.__dict__
    state["size"] = size
    state["axis"] = axis
    state["map"] = map
    state["step"] = step
    state["extent"] = extent
    state["grows"] = grows
    return d


def new_dim(size: int, digits: tuple[Digit, ...] | None, prefix: int = 0) -> Dim:
    """``Dim(...)``, as :func:`new_digit`."""
    d = _new(Dim)
    state = d.__dict__
    state["size"] = size
    state["digits"] = digits
    state["prefix"] = prefix
    return d


def new_map_dim(size: int, digit: Digit) -> Dim:
    """The one-digit dim of a map op's output (:func:`new_dim`), with the cached ``spatial``
    and ``plain_digit`` filled in as the properties would compute them: the receptive-field
    pass asks both of every such dim once."""
    d = new_dim(size, (digit,))
    state = d.__dict__
    state["spatial"] = (digit,) if digit.axis is not None else ()
    state["plain_digit"] = digit if digit.size != 1 and digit.axis is not None and \
        digit.step == 1 and digit.size == digit.extent else None
    return d


# new_digit/new_dim fill the instance dict field by field: they must name every field
assert [f.name for f in fields(Digit)] == ["size", "axis", "map", "step", "extent", "grows"]
assert [f.name for f in fields(Dim)] == ["size", "digits", "prefix"]

#: size -> its position-free Dim: one shared (immutable) object per size
_PLAIN: dict[int, Dim] = {}


def _plain(size: int) -> Dim:
    found = _PLAIN.get(size) if type(size) is int else None  # an np.int64 size stays its own
    if found is None:
        found = new_dim(size, (new_digit(size, None, "", 1, 1, False),) if size != 1 else ())
        if type(size) is int and len(_PLAIN) < 10_000:
            _PLAIN[size] = found
    return found


def carried_axes(dim: Dim | None) -> set[tuple[str, int]]:
    """(map, axis) pairs whose positions a dimension indexes."""
    if dim is None:
        return set()
    return {(d.map, d.axis) for d in dim.spatial}


def grows(dim: Dim | None) -> bool:
    """The dimension's size follows the input size (it holds a growing digit)."""
    return dim is not None and any(d.grows for d in dim.spatial)


def plain_map(dim: Dim | None) -> Digit | None:
    """The single digit of a dim that is exactly one whole axis of a map (a conv's input)."""
    return None if dim is None else dim.plain_digit


def _shape(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    shapes = g.nodes[name].get("shapes")
    return tuple(shapes[0]) if shapes and shapes[0] is not None else None


def _left_pad(dims: tuple[Dim, ...], rank: int) -> tuple[Dim, ...]:
    return (_plain(1),) * (rank - len(dims)) + tuple(dims)


def _broadcast(ins: list[tuple[Dim, ...] | None], shape) -> tuple[Dim, ...] | None:
    """Right-aligned; each output dim from an operand that has its full size, preferring one
    that carries positions."""
    if any(i is None for i in ins):
        return None
    rank = len(shape)
    if len(ins) == 2 and type(ins[0]) is tuple and len(ins[0]) == rank and len(ins[1]) == rank:
        return _broadcast_two(ins[0], ins[1], shape)
    if all(len(i) == rank for i in ins):  # no padding (a residual add): no lists per dim
        out = []
        for k, size in enumerate(shape):
            pick = None
            for operand in ins:
                d = operand[k]
                if d.size == size:
                    if d.spatial:
                        pick = d
                        break
                    if pick is None:
                        pick = d
            if pick is None:
                return None
            out.append(pick)
        first = ins[0]
        # every dim from the first operand: its tuple itself, so a chain of adds shares one
        if all(a is b for a, b in zip(out, first)) and type(first) is tuple:
            return first
        return tuple(out)
    padded = [_left_pad(i, len(shape)) for i in ins]
    out = []
    for k, size in enumerate(shape):
        full = [p[k] for p in padded if p[k].size == size]
        if not full:
            return None
        carrying = [d for d in full if d.spatial]
        out.append(carrying[0] if carrying else full[0])
    return tuple(out)


def _broadcast_two(a: tuple[Dim, ...], b: tuple[Dim, ...], shape) -> tuple[Dim, ...] | None:
    """:func:`_broadcast` of two operands of the output's rank (a residual add): per dim the
    first full-size operand that carries positions, else the first full-size one; the first
    operand's tuple itself when every pick is its, without a list per node."""
    out = None
    for k, size in enumerate(shape):
        da = a[k]
        if da.size == size and da.spatial:
            pick = da
        else:
            db = b[k]
            if db.size == size and (db.spatial or da.size != size):
                pick = db
            elif da.size == size:
                pick = da
            else:
                return None
        if out is None and pick is not da:
            out = list(a[:k])
        if out is not None:
            out.append(pick)
    return a if out is None else tuple(out)


def describe(dim: Dim | None) -> str:
    """``H/16*W/16`` style text for messages."""
    if dim is None:
        return "?"
    names = "HWD"
    parts = []
    for d in dim.spatial:
        axis = names[d.axis] if d.axis is not None and d.axis < 3 else f"axis{d.axis}"
        parts.append(f"{axis}({d.size})")
    text = "x".join(parts) or str(dim.size)
    return f"{dim.prefix}+{text}" if dim.prefix else text
