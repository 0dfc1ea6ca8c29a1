"""Axis provenance and receptive fields through ``F.unfold`` / ``F.fold`` (nn.Unfold, nn.Fold).

``F.unfold(x, k, dilation=d, padding=p, stride=s)`` turns ``(B, C, H, W)`` into
``(B, C*kh*kw, Lh*Lw)``: entry ``(c*kh*kw + i*kw + j, lh*Lw + lw)`` is the input pixel
``(lh*s - p + i*d, lw*s - p + j*d)`` (zero where that lies in the padding). Per input axis the
pair (block ``l``, offset ``i``) is one position of a *virtual map* named after the unfold node,
numbered ``v = l*k + i``; the channel dim carries the offset digit (step 1), the block dim the
block digit (step k). Position ``v`` reads input position ``l*s - p + i*d``, so its field is
exact, per position (:func:`unfold_fields`).

``F.fold(cols, output_size, k, ...)`` is the adjoint: it sums every block entry into the pixel
it came from, so output pixel ``y`` reads the union of the virtual positions ``v = l*k + i``
with ``l*s - p + i*d == y`` (none: the pixel is 0). It needs the virtual map's digits laid out
as the unfold made them (:func:`fold_dims`); anything else is unknown, never a guess.
"""

from __future__ import annotations

from math import gcd
from typing import Any

from archlint.passes.field_grid import MAX_PERIOD, _hull, _make
from archlint.passes.provenance_dims import Digit, Dim, _plain, plain_map


def _blocks(n: int, geo: dict, axis: int) -> int:
    k, d, p, s = (geo[key][axis] for key in ("kernel", "dilation", "padding", "stride"))
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def unfold_dims(name: str, geo: dict, first: tuple[Dim, ...], shape) -> tuple[Dim, ...] | None:
    """``(B, C, H, W)`` of plain map axes -> ``(B, C*kh*kw, L)`` over the virtual map ``name``."""
    if len(first) != 4 or len(shape) != 3 or any(d.spatial or d.digits is None for d in first[:2]):
        return None
    digits = [plain_map(d) for d in first[2:]]
    if any(d is None for d in digits):
        return None
    counts = [_blocks(dig.size, geo, a) for a, dig in enumerate(digits)]
    kernel = geo["kernel"]
    channels = first[1].size
    if min(counts) < 1 or shape[1] != channels * kernel[0] * kernel[1] \
            or shape[2] != counts[0] * counts[1]:
        return None
    offsets: list[Digit] = list(first[1].digits or ())
    blocks: list[Digit] = []
    for a, (dig, count) in enumerate(zip(digits, counts)):
        k = kernel[a]
        extent = count * k
        if k > 1:
            offsets.append(Digit(k, dig.axis, name, 1, extent, False))
        if count > 1:
            blocks.append(Digit(count, dig.axis, name, k, extent, dig.grows))
    return (first[0], Dim(shape[1], tuple(offsets)), Dim(shape[2], tuple(blocks)))


def _virtual_axes(cols: Dim, blocks: Dim, geo: dict, counts: list[int]
                  ) -> list[tuple[str, int, bool, bool]] | None:
    """(map, axis, grows, by_block) of the virtual map per fold axis, when ``blocks`` carries
    its block digits as :func:`unfold_dims` laid them out and ``cols`` its offset digits, or no
    position at all (``by_block``: a Linear over the block's entries mixed them, so every entry
    of a block stands for the whole block; :func:`fold_fields` checks that they read alike)."""
    kernel = geo["kernel"]
    if cols.prefix or blocks.prefix or cols.digits is None or blocks.digits is None:
        return None
    offsets = [d for d in cols.digits if d.size != 1]
    found_blocks = [d for d in blocks.digits if d.size != 1]
    want_blocks = [a for a in (0, 1) if counts[a] > 1]
    if len(found_blocks) != len(want_blocks) or len(want_blocks) != 2:
        return None  # a single block along an axis: no block digit to follow
    out = []
    for a, d in zip(want_blocks, found_blocks):
        if d.axis is None or d.size != counts[a] or d.step != kernel[a] \
                or d.extent != counts[a] * kernel[a]:
            return None
        out.append((d.map, d.axis, d.grows, True))
    spatial = [d for d in offsets if d.axis is not None]
    if not spatial:
        return out
    want_offsets = [a for a in (0, 1) if kernel[a] > 1]
    tail = offsets[len(offsets) - len(want_offsets):]
    if len(offsets) < len(want_offsets) or len(spatial) != len(want_offsets) \
            or any(d.axis is None for d in tail):
        return None
    for a, d in zip(want_offsets, tail):
        if (d.map, d.axis) != out[a][:2] or d.size != kernel[a] or d.step != 1 \
                or d.extent != counts[a] * kernel[a]:
            return None
        out[a] = out[a][:3] + (False,)
    return out


def fold_dims(name: str, geo: dict, first: tuple[Dim, ...], shape) -> tuple[Dim, ...] | None:
    """``(B, C*kh*kw, L)`` over a virtual map -> ``(B, C, H, W)``, a new map ``name``."""
    if len(first) != 3 or len(shape) != 4 or first[0].spatial or "output_size" not in geo:
        return None
    size = geo["output_size"]
    counts = [_blocks(size[a], geo, a) for a in (0, 1)]
    axes = _virtual_axes(first[1], first[2], geo, counts)
    if axes is None or tuple(shape[2:]) != tuple(size):
        return None
    out = [Dim(n, (Digit(n, axis, name, 1, n, grows),)) for n, (_, axis, grows, _)
           in zip(shape[2:], axes)]
    return (first[0], _plain(shape[1]), *out)


def blocks_dims(name: str, item: tuple, dim: Dim) -> tuple[Dim, Dim] | None:
    """The (offset, block) dims a ``("blocks", ...)`` index makes of one whole map axis."""
    digit = plain_map(dim)
    if digit is None:
        return None
    _, k, d, start, s = item
    count = (digit.size - start - d * (k - 1) - 1) // s + 1
    if count < 1:
        return None
    extent = count * k
    return (Dim(k, (Digit(k, digit.axis, name, 1, extent, False),) if k > 1 else ()),
            Dim(count, (Digit(count, digit.axis, name, k, extent, digit.grows),)
                if count > 1 else ()))


def blocks_fields(name: str, items, first: tuple[Dim, ...], state_of) -> dict:
    """Fields of the virtual maps that ``("blocks", ...)`` items start (see :func:`unfold_fields`)."""
    out = {}
    pos = 0
    for it in items:
        if it[0] == "blocks":
            digit = plain_map(first[pos])
            if digit is None:
                continue
            state = state_of((digit.map, digit.axis))
            _, k, d, start, s = it
            out[(name, digit.axis)] = _unfold_axis(state, k, d, -start, s) \
                if isinstance(state, tuple) else state
        if it[0] in ("int", "slice", "tensor", "blocks"):
            pos += 1
    return out


# -- receptive fields ---------------------------------------------------------------------------


def unfold_fields(name: str, geo: dict, first: tuple[Dim, ...], state_of) -> dict:
    """The virtual map's grid per axis: position ``l*k + i`` reads ``l*s - p + i*d``."""
    out = {}
    for a, dim in enumerate(first[2:]):
        digit = plain_map(dim)
        state = state_of((digit.map, digit.axis))
        if isinstance(state, tuple):
            state = _unfold_axis(state, *(geo[key][a] for key in
                                          ("kernel", "dilation", "padding", "stride")))
        out[(name, digit.axis)] = state
    return out


def _unfold_axis(grid: Any, k: int, d: int, p: int, s: int) -> Any:
    period, shift = grid[0], grid[1]
    # a period of blocks that moves the input grid by a whole number of its periods
    blocks = 1
    while (blocks * s) % period:
        blocks += 1
    if blocks * k > MAX_PERIOD:
        return None
    spans = [_hull(grid, [l * s - p + i * d]) for l in range(blocks) for i in range(k)]
    return _make(blocks * k, shift * blocks * s // period, spans)


def fold_fields(name: str, geo: dict, first: tuple[Dim, ...], state_of) -> dict | None:
    """Output pixel ``y`` reads every virtual position ``l*k + i`` with ``l*s - p + i*d == y``."""
    size = geo["output_size"]
    counts = [_blocks(size[a], geo, a) for a in (0, 1)]
    axes = _virtual_axes(first[1], first[2], geo, counts)
    if axes is None:
        return None
    out = {}
    for a, (vmap, axis, _, by_block) in enumerate(axes):
        state = state_of((vmap, axis))
        if isinstance(state, tuple) and by_block and not _alike_in_blocks(state, geo["kernel"][a]):
            state = None  # entries of a block that read different pixels: which is which?
        if isinstance(state, tuple):
            state = _fold_axis(state, size[a], counts[a],
                               *(geo[key][a] for key in ("kernel", "dilation", "padding",
                                                         "stride")))
        out[(name, axis)] = state
    return out


def _alike_in_blocks(grid: Any, k: int) -> bool:
    period = grid[0]
    lcm = period * k // gcd(period, k)
    return all(_hull(grid, [v]) == _hull(grid, [v - v % k]) for v in range(lcm))


def _fold_axis(grid: Any, n: int, count: int, k: int, d: int, p: int, s: int) -> Any:
    period, shift = grid[0], grid[1]
    if n > MAX_PERIOD:
        return None
    readers: list[list[int]] = [[] for _ in range(n)]
    for l in range(count):
        for i in range(k):
            y = l * s - p + i * d
            if 0 <= y < n:
                readers[y].append(l * k + i)
    spans = [_hull(grid, vs) for vs in readers]
    # input pixels per output pixel: the virtual map's k positions of one block move s pixels
    per_pixel_times_n = shift * k * n
    if per_pixel_times_n % (period * s):
        return None
    return _make(n, per_pixel_times_n // (period * s), spans)
