"""The exact per-axis grid of input spans behind a receptive field, and its arithmetic.

:mod:`archlint.passes.receptive_field` runs it over the graph; this module holds the grid itself
(which input pixels each output unit reads, one period at a time), the windows, transposed
windows and resamplings that move it, the hull of merged branches, and the public
:class:`ReceptiveField` read from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from fractions import Fraction
from math import ceil, floor, gcd
from typing import Any

from archlint.graph import Attrs

#: Give up (unknown) beyond this period: no real network gets near it.
MAX_PERIOD = 1024


@dataclass(frozen=True)
class ReceptiveField:
    """One axis's receptive field, in input pixels."""

    size: int | Fraction
    stride: Fraction
    padding: Fraction
    #: exact ``(start, end)`` of units 0..period-1 (None: the unit reads no input pixel)
    phases: tuple[tuple[int, int] | None, ...] = field(default=(), compare=False, repr=False)
    #: input pixels from one period to the next (bounds() runs per unit: keep it integer)
    _shift: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        phases = self.phases or ((int(-self.padding), int(-self.padding + self.size - 1)),)
        object.__setattr__(self, "phases", phases)
        stride = self.stride
        # integer arithmetic where the stride is whole (one Fraction product costs microseconds)
        shift = stride * len(phases) if type(stride) is not Fraction or stride.denominator != 1 \
            else stride.numerator * len(phases)
        object.__setattr__(self, "_shift", int(shift))

    @property
    def r(self) -> int | Fraction:
        return self.size

    @property
    def S(self) -> Fraction:
        return self.stride

    @property
    def P(self) -> Fraction:
        return self.padding

    @property
    def center_offset(self) -> Fraction:
        """Centre of unit j minus ``j * stride`` (a period average where units differ)."""
        return Fraction(self.size - 1, 2) - self.padding

    @property
    def period(self) -> int:
        """Units after which the pattern of spans repeats (1 unless upsampled)."""
        return len(self.phases)

    def bounds(self, j: int) -> tuple[int, int] | None:
        """Exact first and last input pixel read by output unit ``j`` (may lie in padding)."""
        q, rho = divmod(j, len(self.phases))
        span = self.phases[rho]
        if span is None:
            return None
        return span[0] + q * self._shift, span[1] + q * self._shift


# -- the exact per-axis grid ------------------------------------------------------------------
# A grid is (T, shift, starts, ends): unit j = q*T + rho reads input pixels
# [starts[rho] + q*shift, ends[rho] + q*shift]; starts[rho] is None for a unit that reads none.
# GLOBAL marks an axis whose every value depends on the whole input; None is unknown.

GLOBAL = "global"
#: every value depends on the whole input along the axis through token mixing (attention, a
#: token MLP, a mean over tokens). Unlike GLOBAL (pooled data broadcast back, such as an SE
#: gate), it dominates a merge: the merged values really read the whole input.
ATTENDED = "attended"
Grid = tuple


def _is_global(state: Any) -> bool:
    return state is GLOBAL or state is ATTENDED


def _span(grid: Grid, x: int) -> tuple[int, int] | None:
    period, shift, starts, ends = grid
    q, rho = divmod(x, period)
    start = starts[rho]
    if start is None:
        return None
    return start + q * shift, ends[rho] + q * shift


def _hull(grid: Grid, xs: Any) -> tuple[int, int] | None:
    lo = hi = None
    for x in xs:
        span = _span(grid, x)
        if span is None:
            continue
        if lo is None or span[0] < lo:
            lo = span[0]
        if hi is None or span[1] > hi:
            hi = span[1]
    return None if lo is None else (lo, hi)


def _make(period: int, shift: int, spans: list[tuple[int, int] | None]) -> Grid | None:
    """A grid from one period of spans, reduced to its smallest period."""
    if all(s is None for s in spans):
        return None
    for d in range(1, period):
        if period % d or (shift * d) % period:
            continue
        step = shift * d // period
        if all(_shifted(spans[i], step) == spans[i + d] for i in range(period - d)):
            period, shift, spans = d, step, spans[:d]
            break
    if period > MAX_PERIOD:
        return None
    return (
        period,
        shift,
        tuple(None if s is None else s[0] for s in spans),
        tuple(None if s is None else s[1] for s in spans),
    )


def _shifted(span: tuple[int, int] | None, step: int) -> tuple[int, int] | None:
    return None if span is None else (span[0] + step, span[1] + step)


def _window(grid: Grid, k: int, s: int, p: int, d: int = 1) -> Grid | None:
    """Unit j reads positions j*s - p + t*d for t < k."""
    if k < 1 or s < 1 or d < 1:
        return None
    period, shift, starts, ends = grid
    if period == 1:
        return (1, shift * s, (starts[0] - p * shift,), (ends[0] + ((k - 1) * d - p) * shift,))
    period_out = period // gcd(period, s)
    shift_out = shift * (s * period_out // period)
    # spans grow with x inside each residue class mod the period, so the first and the last
    # `period` taps decide the hull
    taps = range(k) if k <= 2 * period else [*range(period), *range(k - period, k)]
    spans = [_hull(grid, [j * s - p + t * d for t in taps]) for j in range(period_out)]
    return _make(period_out, shift_out, spans)


def _transpose(grid: Grid, k: int, s: int, p: int, d: int = 1) -> Grid | None:
    """Unit o reads inputs (o + p - t*d) / s for the taps t where that divides."""
    period, shift = grid[0], grid[1]
    if k < 1 or s < 1 or d < 1 or s * period * k > 50 * MAX_PERIOD:
        return None
    spans = []
    for o in range(s * period):
        xs = [(o + p - t * d) // s for t in range(k) if (o + p - t * d) % s == 0]
        spans.append(_hull(grid, xs))
    return _make(s * period, shift, spans)


def _upsample(grid: Grid, f: int, taps: list[tuple[int, int]]) -> Grid | None:
    """Unit q*f + rho reads inputs q + taps[rho][0] .. q + taps[rho][1]."""
    period, shift = grid[0], grid[1]
    if f < 1 or f * period > MAX_PERIOD:
        return None
    spans = []
    for j in range(f * period):
        q, rho = divmod(j, f)
        lo, hi = taps[rho]
        spans.append(_hull(grid, range(q + lo, q + hi + 1)))
    return _make(f * period, shift, spans)


_FIELDS: dict[Grid, ReceptiveField] = {}
_new = object.__new__
# _field fills a ReceptiveField's instance dict field by field: it must name every field
assert [f.name for f in fields(ReceptiveField)] == ["size", "stride", "padding", "phases", "_shift"]
#: n -> Fraction(n): Fractions are immutable, and a chain's strides and paddings repeat
_WHOLE: dict[int, Fraction] = {}


def _whole(n: int) -> Fraction:
    found = _WHOLE.get(n)
    if found is None:
        found = Fraction(n)
        if len(_WHOLE) < 100_000:
            _WHOLE[n] = found
    return found


def _field(grid: Grid) -> ReceptiveField:
    rf = _FIELDS.get(grid)
    if rf is not None:
        return rf
    period, shift, starts, ends = grid
    if period == 1 and type(shift) is int:
        # the one span given: the instance __init__ and __post_init__ make (a whole stride,
        # so _shift is the shift), without their per-field setattr (one per new grid)
        rf = _new(ReceptiveField)
        state = rf.__dict__
        state["size"] = ends[0] - starts[0] + 1
        state["stride"] = _whole(shift)
        state["padding"] = _whole(-starts[0])
        state["phases"] = ((starts[0], ends[0]),)
        state["_shift"] = shift
    elif period == 1:
        rf = ReceptiveField(ends[0] - starts[0] + 1, Fraction(shift), Fraction(-starts[0]),
                            ((starts[0], ends[0]),))
    else:
        live = [i for i in range(period) if starts[i] is not None]
        size = max(ends[i] - starts[i] + 1 for i in live)
        centre = Fraction(
            period * sum(starts[i] + ends[i] for i in live) - 2 * shift * sum(live),
            2 * period * len(live),
        )
        rf = ReceptiveField(
            size,
            Fraction(shift, period),
            Fraction(size - 1, 2) - centre,
            tuple(None if starts[i] is None else (starts[i], ends[i]) for i in range(period)),
        )
    if len(_FIELDS) > 100_000:
        _FIELDS.clear()
    _FIELDS[grid] = rf
    return rf


# -- resampling: which input taps each output reads ---------------------------------------------


def _source_taps(attrs: Attrs, ratio: Fraction, j: int) -> tuple[int, int] | None:
    """First and last input index read by output j, for input/output size ``ratio`` (in/out)."""
    mode = (attrs.mode or "nearest").lower()
    ctm = attrs.extra.get("coordinate_transformation_mode")
    if ctm is None:  # PyTorch
        ctm = "asymmetric" if mode == "nearest" else "half_pixel"
        rounding = "floor" if mode == "nearest" else "round_prefer_ceil"
    else:
        rounding = attrs.extra.get("nearest_mode", "round_prefer_floor")
    if ctm in ("half_pixel", "pytorch_half_pixel"):
        x = (j + Fraction(1, 2)) * ratio - Fraction(1, 2)
    elif ctm == "asymmetric":
        x = j * ratio
    else:
        return None
    if mode in ("nearest", "nearest-exact"):
        index = {
            "floor": floor(x),
            "ceil": ceil(x),
            "round_prefer_floor": ceil(x - Fraction(1, 2)),
            "round_prefer_ceil": floor(x + Fraction(1, 2)),
        }.get(rounding)
        return None if index is None else (index, index)
    base = floor(x)
    exact = x == base
    if mode in ("linear", "bilinear", "trilinear"):
        return (base, base) if exact else (base, base + 1)
    if mode in ("cubic", "bicubic"):
        return (base, base) if exact else (base - 1, base + 2)
    if mode == "area":  # adaptive average pooling bins
        lo = floor(j * ratio)
        hi = ceil((j + 1) * ratio) - 1
        return lo, hi
    return None


def _resample(grid: Grid, attrs: Attrs, ratio: Fraction) -> Grid | None:
    """Resize by ``ratio`` = input size / output size (1/f up, m down; integers only)."""
    if attrs.align_corners:
        return None
    if ratio.denominator != 1 and ratio.numerator != 1:
        return None
    if ratio.numerator == 1:  # up by f
        f = ratio.denominator
        if f > MAX_PERIOD:
            return None
        taps = [_source_taps(attrs, ratio, rho) for rho in range(f)]
        if any(t is None for t in taps):
            return None
        return _upsample(grid, f, taps)  # type: ignore[arg-type]
    m = ratio.numerator
    taps0 = _source_taps(attrs, ratio, 0)
    if taps0 is None:
        return None
    lo, hi = taps0
    return _window(grid, hi - lo + 1, m, -lo)


def _integer_ratio(value: float) -> Fraction | None:
    """``1/value`` as an exact ratio when value or 1/value is (numerically) an integer."""
    if not value > 0 or value == float("inf"):  # also NaN
        return None
    if abs(value - round(value)) < 1e-9:
        return Fraction(1, int(round(value)))
    inv = 1.0 / value
    if abs(inv - round(inv)) < 1e-9:
        return Fraction(int(round(inv)))
    return None



def _merge_axis(states: list[Any]) -> Any:
    """The hull of several branches on one axis; global branches do not count."""
    if any(s is ATTENDED for s in states):
        return ATTENDED
    local = [s for s in states if s is not GLOBAL]
    if not local:
        return GLOBAL
    if any(s is None for s in local):
        return None
    first = local[0]
    if all(s == first for s in local):
        return first
    if all(s[0] == 1 and s[2][0] is not None for s in local):
        # every branch has one span per unit (no upsampling): equal shifts, then the hull;
        # what the general path below gives, without building a period of spans
        shift = first[1]
        if any(s[1] != shift for s in local):
            return None
        return (1, shift, (min(s[2][0] for s in local),), (max(s[3][0] for s in local),))
    # equal strides: shift_a / T_a == shift_b / T_b
    if any(s[1] * first[0] != first[1] * s[0] for s in local):
        return None
    period = 1
    for s in local:
        period = period * s[0] // gcd(period, s[0])
    if period > MAX_PERIOD:
        return None
    shift = first[1] * period // first[0]
    spans = []
    for j in range(period):
        parts = [_span(s, j) for s in local]
        parts = [p for p in parts if p is not None]
        spans.append((min(p[0] for p in parts), max(p[1] for p in parts)) if parts else None)
    return _make(period, shift, spans)


def _aligned(branches: list[tuple[Any, ...]]) -> bool | None:
    """Equal stride and centre offset on every axis, over the branches that are not global."""
    verdict: bool | None = True
    for axis_states in zip(*branches):
        local = [s for s in axis_states if not _is_global(s)]
        if len(local) < 2:
            continue
        if any(s is None for s in local):
            verdict = None
            continue
        first = _alignment_key(local[0])
        if any(_alignment_key(s) != first for s in local[1:]):
            return False
    return verdict


_ALIGNMENT_KEYS: dict[Grid, tuple[int, int, int, int]] = {}


def _alignment_key(grid: Grid) -> tuple[int, int, int, int]:
    """(stride, centre offset) of a grid's field as reduced integer fractions: merges compare
    these at every node, and integers compare far faster than Fractions."""
    key = _ALIGNMENT_KEYS.get(grid)
    if key is None:
        period, shift, starts, ends = grid
        if period == 1:  # centre offset (start + end) / 2, stride shift / 1
            twice = starts[0] + ends[0]
            half = gcd(twice, 2)
            key = (shift, 1, twice // half, 2 // half)
        else:
            rf = _field(grid)
            stride, offset = rf.stride, rf.center_offset
            key = (stride.numerator, stride.denominator, offset.numerator, offset.denominator)
        if len(_ALIGNMENT_KEYS) > 100_000:
            _ALIGNMENT_KEYS.clear()
        _ALIGNMENT_KEYS[grid] = key
    return key
