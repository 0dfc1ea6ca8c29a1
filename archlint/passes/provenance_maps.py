"""The map ops of :mod:`archlint.passes.provenance`: conv, pools, resize, pad, slice and pixel
(un)shuffle on an ``N, C, *spatial`` tensor make a new map of positions (its docs explain maps).

Split from the pass to keep it short: the per-node template (only the node's own digits are
made per node), the fallbacks for pads and slices on token layouts, and the fit check.
"""

from __future__ import annotations

from typing import Iterable

from archlint.passes.provenance_dims import Digit, Dim, _plain, new_digit, new_map_dim, plain_map


def _map_op_memo(templates: dict, name: str, op: str, attrs, first, shape):
    """The provenance pass's step of a map op on an input with known dims: what
    :func:`_map_op` (and, when it gives nothing, the pad/slice fallbacks) return, and whether
    it fits ``shape``. The output's digits name the node's own map, but everything else is a
    function of (op, attrs record, input dims, shape): that part is remembered per distinct
    key (the input's dims are shared along a chain of residual blocks), and only the digits
    are made per node."""
    key = (op, id(attrs), id(first), shape)
    found = templates.get(key)
    if found is None or found[0] is not attrs or found[1] is not first:
        made = _map_op(name, op, attrs, first, shape)
        if made is None or len(first) < 3 or len(shape) != len(first):
            # no new map (unknown, or a pad/slice fallback): the general path, not remembered
            return _step_map_fallback(name, op, attrs, first, shape, made), False
        plan = tuple((d.size, d.digits[0].axis, d.digits[0].grows) for d in made[2:])
        fits = _fitted(made, shape) is made
        if len(templates) > 4096:
            templates.clear()
        templates[key] = (attrs, first, made[:2], plan, fits)
        return made, fits
    head, plan = found[2], found[3]
    return head + tuple([new_map_dim(n, new_digit(n, axis, name, 1, n, grow))
                         for n, axis, grow in plan]), found[4]


def _step_map_fallback(name, op, attrs, first, shape, dims):
    """The rest of the provenance step's map-op branch, once :func:`_map_op` gave ``dims``."""
    if dims is None and op in ("pad", "slice") and _sizes(first) == shape:
        return first  # a pad of zero (Swin pads to whole windows) on a token layout
    if dims is None and op == "slice":
        return _strided_slice(first, layout_slices(attrs, len(first)), shape)
    return dims


def _fitted(dims, shape) -> tuple[Dim, ...] | None:
    """The dims checked against the real shape: a position-free dim of another size (one piece
    of a split, read through a tuple element) is resized; a dim of positions must match."""
    if dims is None or shape is None or len(dims) != len(shape):
        return None
    for d, s in zip(dims, shape):
        if d is None or d.size != s:
            break
    else:  # the common case: every dim fits; keep the tuple a chain of ops shares
        return dims if type(dims) is tuple else tuple(dims)
    out = []
    for d, s in zip(dims, shape):
        if d is not None and d.size == s:
            out.append(d)
        elif d is not None and not d.spatial:
            out.append(_plain(s))
        else:
            return None
    return tuple(out)


def _sizes(dims: Iterable[Dim | None]) -> tuple[int | None, ...]:
    return tuple(None if d is None else d.size for d in dims)


def _map_op(name, op, attrs, first, shape) -> tuple[Dim, ...] | None:
    if len(first) < 3:
        return None
    head = (first[0], _plain(shape[1]))
    if op == "global_pool":
        if len(shape) == len(first):
            return head + tuple(_plain(s) for s in shape[2:])
        return head if len(shape) == 2 else None
    if len(shape) != len(first):
        return None
    digits = [plain_map(d) for d in first[2:]]
    if any(d is None for d in digits) or len({d.axis for d in digits}) != len(digits):
        return None
    fixed = op == "adaptive_pool" or (op == "upsample" and attrs.size and attrs.size_from is None)
    out = []
    for axis_digit, n in zip(digits, shape[2:]):
        grow = axis_digit.grows and not fixed
        out.append(new_map_dim(n, new_digit(n, axis_digit.axis, name, 1, n, grow)))
    return head + tuple(out)


def layout_slices(attrs, rank: int) -> list[tuple]:
    """(start, stop, step) per dim of a slice op, batch and channel dims included."""
    head = list(attrs.extra.get("slices_batch_channel") or ((None, None, None),) * 2)
    for axis, value in (attrs.extra.get("non_spatial_slices") or {}).items():  # ONNX
        head[axis] = value
    per = [tuple(h) for h in head] + [tuple(x) for x in (attrs.slices or ())]
    per += [(None, None, 1)] * (rank - len(per))
    return [(a, b, 1 if c is None else c) for a, b, c in per[:rank]]


def strided_map(digit: Digit, step: int) -> str:
    """Every ``step``-th position of a map is a map of its own (Swin's patch merging reads the
    four phases ``x[:, 0::2, 0::2]``...; they share it, so their fields merge)."""
    return f"{digit.map}/s{step}"


def _strided_slice(first, slices, shape) -> tuple[Dim, ...] | None:
    out = []
    for dim, (start, stop, step), n in zip(first, slices, shape):
        if start in (None, 0) and stop is None and step == 1:
            out.append(dim)
            continue
        if not dim.spatial:
            out.append(_plain(n))
            continue
        digit = plain_map(dim)
        if digit is None or step < 1 or (start or 0) >= step or stop is not None:
            return None
        out.append(Dim(n, (Digit(n, digit.axis, strided_map(digit, step), 1, n, digit.grows),)))
    return tuple(out)
