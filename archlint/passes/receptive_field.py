"""Receptive field per tensor and spatial axis, in input pixels (Araujo et al., Distill 2019).

Public API
----------
``receptive_field_pass(g)`` writes, for every node:

``g.nodes[n]["rf"]``
    ``None`` when the output has no spatial axes (after flatten, a linear head); else a tuple
    with one entry per spatial axis: a :class:`ReceptiveField`, or ``None`` where it is unknown
    (past an op nobody can model: ``unknown``, a reshape of spatial axes, an align_corners
    resize...) or where it covers the whole input (see ``rf_global``). Never a guess.
``g.nodes[n]["rf_global"]``
    True when every value of the output depends on the whole input: the node only sees
    globally pooled data (global pooling, an adaptive pool to 1, and anything computed from
    them only, such as the excitation branch of a squeeze-and-excitation block or the image
    pooling branch of ASPP). Its ``rf`` entries are None: the size is the input size.
``g.nodes[n]["rf_aligned"]``
    On merges (add/sub/mul/div/concat): True when every branch that is not global has the same
    stride and the same centre offset on every spatial axis, False when they differ, None when
    a branch's field is unknown. Global branches are left out: a 1x1 map broadcast over the
    other branch is the same at every position, so it cannot be misaligned. Other nodes: None.

The model
---------
For an output unit ``j`` the field is the span ``[start(j), end(j)]`` of input pixels it reads.
Through convolutions and pools ``start(j) = j*S - P`` and ``r = end - start + 1`` are the same for
every unit and follow the Distill recurrences::

    k_eff = d*(k-1) + 1;  r_out = r_in + (k_eff-1)*S_in;  S_out = S_in*s;  P_out = P_in + p_begin*S_in

Upsampling makes the stride fractional (``fractions.Fraction``), and then units differ by phase:
after a nearest upsample by 2, units 2i and 2i+1 read the same input, so a following 2x2 pool
reads one input, not "1.5". The pass therefore keeps, per axis, the exact span of every unit
in one period ``T`` (``start(j + T) = start(j) + T*S``) and reports:

* ``size`` (r): the largest span over the units of a period (an integer number of pixels);
* ``stride`` (S): input pixels per output unit, a Fraction;
* ``center_offset``: the centre of unit ``j`` minus ``j*S``, averaged over a period (for plain
  CNNs simply the centre of unit 0); ``padding`` (P) is ``(r-1)/2 - center_offset``, which
  equals the Distill effective padding whenever the period is 1.

``ReceptiveField.bounds(j)`` gives the exact span of unit ``j``.

Per op (``p`` is the begin padding):

* conv / pools / lp_pool: unit j reads positions ``j*s - p + t*d``, t < k.
* conv_transpose (k, s, p, d): unit o reads inputs ``i = (o + p - t*d) / s`` for the taps t
  where that divides, so ``S_out = S_in / s`` and each unit reads at most ``ceil(k_eff / s)``
  inputs: with ``k % s == 0`` and d = 1, exactly ``k / s``, so ``r_out = r_in + (k/s - 1)*S_in``.
* upsample by an integer factor f (or down by an integer m): the source coordinate of each
  output as PyTorch and ONNX Resize compute it (nearest: ``floor(j/f)``; nearest-exact and the
  ONNX rounding modes; linear/bilinear/trilinear: the two taps around ``(j+1/2)/f - 1/2``;
  cubic: four). Nearest keeps r and divides S by f; bilinear adds one input tap.
  align_corners, non-integer ratios and unlisted coordinate modes: unknown.
* pixel_shuffle r: like nearest upsampling by r; pixel_unshuffle r: a k = s = r window.
* pad (negative pads crop) and slice (start, step) shift and stride the grid exactly.
* adaptive pool to 1 and global pool: global. Adaptive pool to t from n with t | n or n | t:
  the equivalent fixed window at the example size; otherwise unknown.
* pointwise, norm, output: unchanged (normalization statistics are ignored, as in Distill).
* merges: the hull of the branches' spans (with equal centres: the largest field); branches
  with different strides give an unknown field. A concat along a spatial axis: unknown there.
* linear on a spatial tensor: global along its last axis.

Off the ``N, C, *spatial`` layout (tokens, windows, channels-last) the field follows the axis
provenance instead (:mod:`archlint.passes.token_fields`): ``rf`` then has one entry per input
spatial axis, ``rf_global_axes`` says per axis whether every value reads the whole input, and
``rf_global_cause`` names the op that made it so (attention, a token MLP, a mean over tokens).
Such a field (``ATTENDED``) dominates a merge, unlike pooled data broadcast back (``GLOBAL``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import floor, gcd, ceil
from typing import Any

import networkx as nx

from archlint.graph import ELEMENTWISE_MERGES, MERGES, Attrs

__all__ = ["ReceptiveField", "receptive_field_pass"]

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
        object.__setattr__(self, "_shift", int(self.stride * len(phases)))

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


def _field(grid: Grid) -> ReceptiveField:
    rf = _FIELDS.get(grid)
    if rf is not None:
        return rf
    period, shift, starts, ends = grid
    if period == 1:
        rf = ReceptiveField(ends[0] - starts[0] + 1, Fraction(shift), Fraction(-starts[0]))
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


# -- the pass -------------------------------------------------------------------------------


def _spatial_count(g: nx.DiGraph, name: str, default: int) -> int:
    shapes = g._node[name].get("shapes")  # the raw node dict: this runs once per node
    if shapes and shapes[0] is not None:
        return max(len(shapes[0]) - 2, 0)
    return default


def _example_spatial(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    shapes = g.nodes[name].get("shapes")
    if not shapes or shapes[0] is None or len(shapes[0]) < 3:
        return None
    return tuple(shapes[0][2:])


def _per_axis(values: Any, axis: int, default: Any) -> Any:
    if not values:
        return default
    return values[axis] if axis < len(values) else values[-1]


def _window_op(state: Any, op: str, attrs: Attrs, axis: int) -> Any:
    k = _per_axis(attrs.kernel, axis, 1)
    default_stride = k if op in ("max_pool", "avg_pool", "lp_pool") else 1
    s = _per_axis(attrs.stride, axis, default_stride)
    d = _per_axis(attrs.dilation, axis, 1)
    p = _per_axis(attrs.padding, axis, (0, 0))[0]
    if op == "conv_transpose":
        return _transpose(state, k, s, p, d)
    return _window(state, k, s, p, d)


def _axis_step(g: nx.DiGraph, name: str, op: str, attrs: Attrs, axis: int, state: Any,
               producer: str) -> Any:
    """The output state of one axis of a single-input spatial op."""
    if state is None:
        return None
    if state is ATTENDED:
        return ATTENDED
    if op == "global_pool":
        return GLOBAL
    if op == "adaptive_pool":
        target = _per_axis(attrs.size, axis, None)
        if target is None:
            return state
        if target == 1:
            return GLOBAL
        if state is GLOBAL:
            return GLOBAL
        n = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
        if n is None:
            return None
        if n % target == 0:
            return _window(state, n // target, n // target, 0)
        if target % n == 0:
            return _upsample(state, target // n, [(0, 0)] * (target // n))
        return None
    if state is GLOBAL:
        return GLOBAL
    if op in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool"):
        if attrs.auto_pad.upper().startswith("SAME") and not attrs.padding:
            return None
        return _window_op(state, op, attrs, axis)
    if op == "pad":
        pb = _per_axis(attrs.padding, axis, (0, 0))[0]
        return _window(state, 1, 1, pb)
    if op == "slice":
        start, _, step = _per_axis(attrs.slices, axis, (None, None, 1))
        if step < 1:
            return None
        if start is None or start >= 0:
            begin = start or 0  # past the end the slice is empty, and invalid anyway
        else:
            n = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
            if n is None:
                return None
            begin = min(max(start + n if start < 0 else start, 0), n)
        return _window(state, 1, step, -begin)
    if op == "pixel_shuffle":
        r = int(attrs.factor or 1)
        return _upsample(state, r, [(0, 0)] * r)
    if op == "pixel_unshuffle":
        r = int(attrs.factor or 1)
        return _window(state, r, r, 0)
    if op == "upsample":
        ratio = None
        if attrs.scale is not None and attrs.size is None and attrs.size_from is None:
            ratio = _integer_ratio(float(_per_axis(attrs.scale, axis, 1.0)))
        else:
            n_in = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
            n_out = (_example_spatial(g, name) or (None,) * (axis + 1))[axis]
            if n_in and n_out:
                ratio = Fraction(n_in, n_out)
        return None if ratio is None else _resample(state, attrs, ratio)
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


def receptive_field_pass(g: nx.DiGraph) -> None:
    """Write ``rf``, ``rf_global``, ``rf_global_axes``, ``rf_global_cause`` and ``rf_aligned``
    on every node (see the module docs and :mod:`archlint.passes.token_fields`)."""
    from archlint.passes import token_fields as tf
    from archlint.passes.provenance import provenance_pass, roll_of_concat

    if any("provenance" not in d for _, d in g.nodes(data=True)):
        provenance_pass(g)
    states: dict[str, tuple[Any, ...]] = {}
    flags: dict[str, bool] = {}
    public: dict[str, tuple[Any, ...] | None] = {}
    fields: dict[str, Any] = {}
    causes: dict[str, str | None] = {}
    copied_axes: dict[str, tuple[bool, ...]] = {}
    n_axes = max((_spatial_count(g, n, 0) for n in g.nodes if g.nodes[n]["op"] == "input"),
                 default=0)
    nodes = dict(g.nodes(data=True))
    for name in _topological(nodes):
        data = nodes[name]
        op = data["op"]
        inputs = data["inputs"]
        aligned = None
        rf = None
        if op == "input" or not inputs:
            count = _spatial_count(g, name, 0)
            axes = (None,) * count if op != "input" else ((1, 1, (0,), (0,)),) * count
            is_global = False
        elif op in ("pointwise", "norm", "output"):
            src = inputs[0]
            axes, is_global = states[src], flags[src]
            rf = public[src]
            if _spatial_count(g, name, len(axes)) != len(axes):
                axes, rf = (None,) * _spatial_count(g, name, 0), None
        elif op in MERGES:
            axes, is_global, aligned = _merge(g, name, op, data["attrs"], inputs, states, flags)
        elif op in tf.TOKEN_OPS:
            count = _spatial_count(g, name, 0)
            axes, is_global = (None,) * count, False
        else:
            axes, is_global = _single(g, name, op, data["attrs"], inputs[0], states, flags)
        dims = data.get("provenance")
        in_dims = [nodes[i].get("provenance") for i in inputs]
        cause = next((causes[i] for i in inputs if causes.get(i)), None)
        token = dims is not None and (op in tf.TOKEN_OPS or (
            op not in ("input", "output") and inputs
            and not (tf.nc_plain(dims) and all(tf.nc_plain(d) for d in in_dims))
            and (op not in tf.MAP_OPS or not tf.nc_plain(in_dims[0]))))
        global_axes = None
        own = None
        if op in ("pointwise", "norm", "output") and rf is not None and not token:
            global_axes = copied_axes.get(inputs[0])
        if token:
            rolled = roll_of_concat(g, name) if op == "concat" else None
            if rolled is not None:  # ONNX's torch.roll: cat(x[k:], x[:k])
                own = tf.token_fields(g, name, [fields.get(rolled[0])],
                                      [nodes[rolled[0]].get("provenance")])
            else:
                own = tf.token_fields(g, name, [fields.get(i) for i in inputs], in_dims)
            if own is not None and any(v is ATTENDED for v in own.values()) and not any(
                    v is ATTENDED for i in inputs for v in (fields.get(i) or {}).values()):
                cause = name
        elif dims is not None and tf.nc_plain(dims):
            own = tf.fields_from_axes(dims, axes)
        if token and own is not None and (len(dims) >= 3 or any(
                v is ATTENDED for v in own.values())):
            if tf.nc_plain(dims):
                axes = tf.axes_from_fields(dims, own)
                rf = None
                is_global = bool(axes) and all(_is_global(a) for a in axes)
                global_axes = tuple(_is_global(a) for a in axes)
            else:
                shown, global_axes = tf.report(dims, own, n_axes)
                rf = tuple(_field(st) if isinstance(st, tuple) else None for st in shown)
                is_global = bool(global_axes) and all(global_axes)
                axes = (None,) * _spatial_count(g, name, 0) if not is_global else \
                    (ATTENDED,) * _spatial_count(g, name, 0)
        if rf is None and axes:
            rf = tuple(_field(s) if isinstance(s, tuple) else None for s in axes)
        if global_axes is None:
            global_axes = tuple(_is_global(a) for a in axes) if rf else ()
        copied_axes[name] = global_axes
        states[name] = axes
        flags[name] = is_global
        public[name] = rf
        fields[name] = own
        causes[name] = cause if any(global_axes) or is_global else None
        data["rf"] = rf
        data["rf_global"] = is_global
        data["rf_global_axes"] = global_axes
        data["rf_global_cause"] = causes[name]
        data["rf_aligned"] = aligned


def _single(g, name, op, attrs, src, states, flags) -> tuple[tuple[Any, ...], bool]:
    axes_in, global_in = states[src], flags[src]
    count = _spatial_count(g, name, len(axes_in))
    if global_in:
        kind = ATTENDED if any(a is ATTENDED for a in axes_in) else GLOBAL
        return (kind,) * count, True
    if op in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_pool",
              "global_pool", "upsample", "pad", "slice", "pixel_shuffle", "pixel_unshuffle"):
        if op == "global_pool":
            return (GLOBAL,) * count, True
        if count != len(axes_in):
            return (None,) * count, False
        axes = tuple(
            _axis_step(g, name, op, attrs, i, s, src) for i, s in enumerate(axes_in)
        )
        return axes, bool(axes) and all(_is_global(a) for a in axes)
    if op == "flatten":
        rank = len(axes_in) + 2
        start = 1 if attrs.axis is None else attrs.axis % rank
        end = rank - 1 if attrs.end_axis is None else attrs.end_axis % rank
        if count == 0:
            return (), bool(axes_in) and all(_is_global(a) for a in axes_in)
        merged = axes_in[max(start - 2, 0): end - 1]
        kept_before = axes_in[: max(start - 2, 0)]
        kept_after = axes_in[end - 1:]
        one = GLOBAL if merged and all(_is_global(a) for a in merged) else None
        axes = kept_before + (one,) + kept_after
        return (axes if len(axes) == count else (None,) * count), False
    if op == "linear":
        if not axes_in:
            return (), False
        if count != len(axes_in):
            return (None,) * count, False
        return axes_in[:-1] + (GLOBAL,), all(_is_global(a) for a in axes_in[:-1])
    # reshape, unknown, and anything else: only a fully global input stays known
    if axes_in and all(_is_global(a) for a in axes_in):
        return (ATTENDED if any(a is ATTENDED for a in axes_in) else GLOBAL,) * count, True
    return (None,) * count, False


def _merge(g, name, op, attrs, inputs, states, flags):
    producers = list(dict.fromkeys(inputs))
    branches = [states[p] for p in producers]
    count = _spatial_count(g, name, max((len(b) for b in branches), default=0))
    if all(flags[p] for p in producers):
        kind = ATTENDED if any(a is ATTENDED for b in branches for a in b) else GLOBAL
        return (kind,) * count, True, True
    skip = None
    if op == "concat":
        rank = count + 2
        axis = 1 if attrs.axis is None else attrs.axis % rank if rank else 1
        skip = axis - 2 if axis >= 2 else None
    # right-align (broadcasting); a flat global branch counts as global on every axis
    aligned_branches = []
    for p, b in zip(producers, branches):
        if flags[p]:
            b = (ATTENDED if any(a is ATTENDED for a in b) else GLOBAL,) * count
        elif len(b) < count:
            b = (GLOBAL,) * (count - len(b)) + tuple(b) if op in ELEMENTWISE_MERGES else (None,) * count
        aligned_branches.append(tuple(b[len(b) - count:]) if count else ())
    axes = []
    for axis in range(count):
        if axis == skip:
            axes.append(None)
            continue
        axes.append(_merge_axis([b[axis] for b in aligned_branches]))
    if axes and all(a is ATTENDED for a in axes):
        return tuple(axes), True, _aligned([tuple(s for i, s in enumerate(b) if i != skip)
                                            for b in aligned_branches])
    kept = [tuple(s for i, s in enumerate(b) if i != skip) for b in aligned_branches]
    return tuple(axes), False, _aligned(kept)


def _topological(nodes: dict[str, dict]) -> list[str]:
    """Insertion order when it is topological (``add_op`` guarantees it), else a real sort."""
    seen: set[str] = set()
    for name, data in nodes.items():
        for src in data["inputs"]:
            if src not in seen:
                return list(nx.topological_sort(_as_graph(nodes)))
        seen.add(name)
    return list(nodes)


def _as_graph(nodes: dict[str, dict]) -> nx.DiGraph:
    order = nx.DiGraph()
    order.add_nodes_from(nodes)
    order.add_edges_from((src, name) for name, data in nodes.items() for src in data["inputs"])
    return order
