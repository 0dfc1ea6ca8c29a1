"""Receptive fields through token layouts, on top of :mod:`archlint.passes.provenance`.

The field of a tensor is kept per *(map, input axis)* (see the provenance docs for maps): the
exact per-position grid of :mod:`archlint.passes.receptive_field` for the positions that map
counts along that axis. Layout ops (reshape, permute, flatten, index...) do not move a value
from one position to another, so they keep the grids as they are; only these change them:

* mixing over a dimension (softmax over it, a Linear/matmul contracting it, attention over the
  keys, a mean over it). For each (map, axis) the dimension indexes:

  - all of the map's positions along the axis: every value now reads the whole input along it
    (``ATTENDED``), on every map of that axis;
  - the lowest digits only, a block of ``m`` consecutive positions (window attention): the field
    grows to whole windows, exactly (a ``m``-wide window of stride ``m``, then spread back);
  - any other set of digits (a dilated set of positions, such as MobileViT's attention across
    patches at one offset inside them): each position reads the positions that differ from it
    in those digits, and its field is the hull of theirs, exactly.

* roll by ``s`` along a dim that is one whole axis: position ``i`` reads position
  ``(i - s) mod n``, exactly, so the units the shift wraps around read the far border (as a
  gradient probe sees it, also where Swin masks those pairs with -100 on the logits).

* F.unfold starts a virtual map of (block, offset) positions and F.fold maps it back
  (:mod:`archlint.passes.provenance_blocks`); a constant index thins a grid
  (:mod:`archlint.passes.provenance_picks`). Both exact, per position.

The text and JSON say which node made an axis global (``rf_global_cause``).
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from archlint.passes.provenance import (
    MAP_OPS,
    Dim,
    carried_axes,
    contracted,
    layout_slices,
    plain_map,
    roll_of_concat,
    strided_map,
)
from archlint.passes.provenance_blocks import blocks_fields, fold_fields, unfold_fields
from archlint.passes.provenance_picks import pick_fields, picks_of
from archlint.passes.field_grid import (
    ATTENDED,
    GLOBAL,
    MAX_PERIOD,
    _hull,
    _make,
    _merge_axis,
    _upsample,
    _window,
)

#: ops whose field follows the provenance (the rest are the NC* ops of receptive_field).
TOKEN_OPS = frozenset({
    "permute", "matmul", "einsum", "attention", "softmax", "reduce", "index", "expand", "roll",
    "split",
})

Fields = dict[tuple[str, int], Any]


def nc_plain(dims: tuple[Dim, ...] | None) -> bool:
    """An ``N, C, *spatial`` tensor whose spatial dims are whole axes of one map, in order."""
    if dims is None or len(dims) < 3:
        return False
    # The receptive-field pass asks this several times per node about dims shared along a
    # chain: remember the answer per dims object (the entry keeps the object, so its id stays).
    known = _NC_PLAIN.get(id(dims))
    if known is not None and known[0] is dims:
        return known[1]
    plain = True  # every spatial dim a whole map axis, no positions in N or C (plain loops:
    for d in dims[2:]:  # this runs once per new dims object, on every conv output)
        if d is None or d.plain_digit is None:
            plain = False
            break
    if plain and (dims[0].spatial or dims[1].spatial):
        plain = False
    if len(_NC_PLAIN) > 200_000:
        _NC_PLAIN.clear()
    _NC_PLAIN[id(dims)] = (dims, plain)
    return plain


_NC_PLAIN: dict[int, tuple[tuple[Dim, ...], bool]] = {}


def fields_from_axes(dims: tuple[Dim, ...], axes: tuple[Any, ...]) -> Fields | None:
    """The per-map fields of an NC* tensor from its per-spatial-dim states."""
    if not nc_plain(dims) or len(axes) != len(dims) - 2:
        return None
    out: Fields = {}
    for dim, state in zip(dims[2:], axes):
        digit = plain_map(dim)
        out[(digit.map, digit.axis)] = state
    return out


def axes_from_fields(dims: tuple[Dim, ...], fields: Fields) -> tuple[Any, ...]:
    return tuple(fields.get((plain_map(d).map, plain_map(d).axis)) for d in dims[2:])


def token_fields(g: nx.DiGraph, name: str, ins: list[Fields | None],
                 in_dims: list[tuple[Dim, ...] | None]) -> Fields | None:
    """The fields of one op's output from its inputs' (None: unknown)."""
    if not ins or any(f is None for f in ins):
        return None
    out_dims = g.nodes[name].get("provenance")
    if g.nodes[name]["op"] in ("add", "sub", "mul", "div", "concat") and out_dims is not None:
        ins = [_renamed(f, d, out_dims) for f, d in zip(ins, in_dims)]
    combined: Fields = {}
    for fields in ins:
        for key, state in fields.items():
            combined[key] = state if key not in combined else _merge_axis([combined[key], state])
    data = g.nodes[name]
    blocks = data["attrs"].extra if data["op"] == "unknown" else {}
    if "unfold" in blocks or "fold" in blocks:
        if out_dims is None or in_dims[0] is None:
            return None
        kind = "unfold" if "unfold" in blocks else "fold"
        made = (unfold_fields if kind == "unfold" else fold_fields)(
            name, blocks[kind], in_dims[0], combined.get)
        return None if made is None else {**combined, **made}
    if data["op"] in MAP_OPS or data["op"] == "global_pool":
        # off the N, C, *spatial layout only a no-op (pad by 0) keeps the positions, and a
        # strided slice (Swin's patch merging) starts a map of every step-th position
        if data.get("provenance") == in_dims[0]:
            return combined
        if data["op"] != "slice" or data.get("provenance") is None:
            return None
        dims = in_dims[0]
        for dim, (start, _, step) in zip(dims, layout_slices(data["attrs"], len(dims))):
            digit = plain_map(dim)
            if digit is None or step == 1 and not start:
                continue
            state = combined.get((digit.map, digit.axis))
            combined[(strided_map(digit, step), digit.axis)] = (
                _window(state, 1, step, -(start or 0)) if isinstance(state, tuple) else state)
        return combined
    if data["op"] == "index" and in_dims[0] is not None:
        picks = picks_of(name, data["attrs"].extra.get("index", ()), in_dims[0])
        if picks is None:
            return None
        pick_fields(combined, picks)
        combined.update(blocks_fields(name, data["attrs"].extra.get("index", ()), in_dims[0],
                                      combined.get))
    for slot, dim in contracted(g, name):
        dims = in_dims[slot]
        if dims is None or dim >= len(dims):
            return None
        _mix(combined, dims[dim])
    rolls = []
    if data["op"] == "roll":
        rolls = list(zip(data["attrs"].extra["shifts"], data["attrs"].extra["dims"]))
    elif data["op"] == "concat":
        rolled = roll_of_concat(g, name)
        if rolled is not None:  # the caller passes the rolled tensor as the only input
            rolls = [(rolled[2], rolled[1])]
    if rolls:
        dims = in_dims[0]
        for shift, dim in rolls:
            digit = plain_map(dims[dim % len(dims)])
            if digit is None:
                for key in carried_axes(dims[dim % len(dims)]):
                    combined[key] = None
                continue
            state = combined.get((digit.map, digit.axis))
            if isinstance(state, tuple):
                combined[(digit.map, digit.axis)] = _rolled(state, shift, digit.extent)
    return combined


def _rolled(state: Any, shift: int, extent: int) -> Any:
    """``torch.roll`` by ``shift`` over ``extent`` positions: position ``i`` reads position
    ``(i - shift) % extent``, so the units the shift wraps around read the far border (a
    gradient reaches it there even where Swin masks those pairs: the mask only adds -100 to
    their logits). Exact, per position; unknown past MAX_PERIOD positions."""
    period, grid_shift = state[0], state[1]
    if extent > MAX_PERIOD or (grid_shift * extent) % period:
        return None
    spans = [_hull(state, [(i - shift) % extent]) for i in range(extent)]
    return _make(extent, grid_shift * extent // period, spans)


def _renamed(fields: Fields, dims: tuple[Dim, ...] | None, out: tuple[Dim, ...]) -> Fields:
    """A merge lines its operands up position by position: a branch whose positions come from
    another map of the same grid (x and conv(x)) is read under the output's map names."""
    if dims is None:
        return fields
    renamed = dict(fields)
    for a, b in zip(reversed(dims), reversed(out)):
        da, db = plain_map(a), plain_map(b)
        if da is None or db is None or da.axis != db.axis or da.size != db.size:
            continue
        key_a, key_b = (da.map, da.axis), (db.map, db.axis)
        if key_a != key_b and key_a in renamed:
            renamed[key_b] = renamed.pop(key_a)
    return renamed


def _mix(fields: Fields, dim: Dim) -> None:
    """Every value reads all entries of ``dim``: widen each (map, axis) it indexes."""
    if dim.spatial and dim.digits is None:
        for key in carried_axes(dim):
            fields[key] = None
        return
    for key in carried_axes(dim):
        digits = sorted((d for d in dim.spatial if (d.map, d.axis) == key), key=lambda d: d.step)
        state = fields.get(key)
        if state is None:
            fields[key] = None
            continue
        covered = math.prod(d.size for d in digits)
        if state is ATTENDED or state is GLOBAL or covered >= digits[0].extent:
            for other in list(fields):
                if other[1] == key[1]:
                    fields[other] = ATTENDED
            continue
        step = 1
        for d in digits:
            if d.step != step:
                fields[key] = _spread(state, digits)
                break
            step *= d.size
        else:
            block = _window(state, covered, covered, 0)
            fields[key] = None if block is None else _upsample(block, covered,
                                                               [(0, 0)] * covered)


def _spread(state: Any, digits: list) -> Any:
    """Mixing over digits that are not the lowest block (MobileViT's attention across patches,
    at one offset inside the patch): position ``x`` reads every position that differs from it
    in those digits only, so its field is the hull of theirs, computed per position over the
    map (exact; unknown past MAX_PERIOD positions or where the digits do not nest)."""
    extent = digits[0].extent
    period, shift = state[0], state[1]
    if extent > MAX_PERIOD or (shift * extent) % period or any(
            d.extent != extent or d.size * d.step > extent for d in digits):
        return None
    offsets = [0]
    for d in digits:
        offsets = [o + k * d.step for o in offsets for k in range(d.size)]
    if len(offsets) != len(set(offsets)) or len(offsets) * extent > 1 << 20:
        return None
    spans = []
    for x in range(extent):
        base = x - sum(((x // d.step) % d.size) * d.step for d in digits)
        spans.append(_hull(state, [base + o for o in offsets]))
    return _make(extent, shift * extent // period, spans)


def report(dims: tuple[Dim, ...], fields: Fields, n_axes: int
           ) -> tuple[tuple[Any, ...], tuple[bool, ...]]:
    """Per input axis: the grid state to show (None: unknown or global) and whether global."""
    states, flags = [], []
    for axis in range(n_axes):
        keys = [k for k in fields if k[1] == axis]
        if any(fields[k] is ATTENDED for k in keys) or (keys and all(
                fields[k] is GLOBAL for k in keys)):
            states.append(None)
            flags.append(True)
            continue
        carriers = [(k, sum(1 for d in dims if k in carried_axes(d))) for k in keys]
        carriers = [(k, n) for k, n in carriers if n]
        if len(carriers) == 1 and carriers[0][1] == 1 and isinstance(fields[carriers[0][0]], tuple):
            key = carriers[0][0]
            carrier = next(d for d in dims if key in carried_axes(d))
            states.append(_per_unit(fields[key], [d for d in carrier.spatial
                                                  if (d.map, d.axis) == key]))
        else:
            states.append(None)
        flags.append(False)
    return tuple(states), tuple(flags)


def _per_unit(state: Any, digits: list) -> Any:
    """The field of the dim's units from the field of the map's positions: unit ``j`` is the
    position ``j * step`` when the dim's digits nest from ``step`` (patches cut by a reshape,
    whose low digits a Linear then mixed: a token is every ``step``-th pixel)."""
    digits = sorted(digits, key=lambda d: d.step)
    if not digits:
        return None
    step = digits[0].step
    expect = step
    for d in digits:
        if d.step != expect:
            return None
        expect *= d.size
    return state if step == 1 else _window(state, 1, step, 0)
