"""Verdicts, the record of one run, and the pure helpers both runtimes share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from archlint.graph import Location, ops, spatial

if TYPE_CHECKING:
    import networkx as nx
    from archlint.findings import Finding

#: Rules whose prediction depends on the input size: confirmed by running at a failing size.
SIZE_DEPENDENT_RULES = frozenset(
    {
        "skip-connection-mismatch",
        "hardcoded-flatten",
        "spatial-collapse",
        "odd-size-stride2",
        "shape-propagation-error",
    }
)
CHECKERBOARD_RULE = "kernel-stride-checkerboard"
#: How many shape mismatches the report lists.
SHOWN_MISMATCHES = 5
#: Input pixels the probed unit's predicted field keeps from each border, so that a larger real
#: field shows instead of being clipped.
RF_MARGIN = 4
#: The most input pixels (all spatial axes together) the receptive-field probe runs at: one
#: float64 forward and backward; 512x512 holds ResNet-50's 427-pixel field.
MAX_PROBE_PIXELS = 512 * 512


def confirmed(detail: str) -> dict[str, str]:
    return {"status": "confirmed", "detail": detail}


def refuted(detail: str) -> dict[str, str]:
    return {"status": "refuted", "detail": detail}


def not_checked(detail: str) -> dict[str, str]:
    return {"status": "not-checked", "detail": detail}


# --------------------------------------------------------------------------------------------
# Pure helpers shared by both frontends
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one forward pass showed, keyed by IR node name."""

    input_shapes: list[tuple[int, ...]]
    #: Output shapes per IR node (the last op mapped to that node wins).
    shapes: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    #: Shapes of the tensor operands each IR node received.
    operands: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    #: Elementwise merges whose operands' spatial sizes differed (they broadcast).
    broadcasts: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    error: str | None = None
    #: IR node that raised (None when unknown or no error).
    error_node: str | None = None
    #: The traced graph ran where the real forward failed, or failed where it ran: a tracing
    #: artefact; only the real forward's outcome is kept.
    traced_differs: bool = False

    @property
    def size_text(self) -> str:
        return "x".join(str(d) for d in self.input_shapes[0]) if self.input_shapes else "?"


def shape_mismatches(g: "nx.DiGraph", run: Run) -> tuple[int, int, list[str]]:
    """(mismatches, compared, first few described) between predicted and observed shapes."""
    mismatched, compared, shown = 0, 0, []
    for name in ops(g):
        predicted = g.nodes[name].get("shapes")
        actual = run.shapes.get(name)
        if predicted is None or actual is None:
            continue
        compared += 1
        predicted = tuple(tuple(s) for s in predicted)
        if tuple(actual[: len(predicted)]) == predicted and len(actual) >= len(predicted):
            continue
        mismatched += 1
        if len(shown) < SHOWN_MISMATCHES:
            shown.append(f"{name}: predicted {_shapes_text(predicted)}, ran {_shapes_text(actual)}")
    return mismatched, compared, shown


def _shapes_text(shapes: Iterable[Iterable[int]]) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes) or "()"


def differing_spatial(shapes: list[tuple[int, ...]]) -> bool:
    """True when tensors of the same rank (>= 3) disagree in some spatial size."""
    spatials = [tuple(s[2:]) for s in shapes if len(s) >= 3]
    if len(spatials) < 2:
        return False
    ranks = {len(s) for s in spatials}
    return len(ranks) == 1 and len(set(spatials)) > 1


def periodic_pattern(values: list[float], period: int) -> list[float]:
    """One period of a periodic sequence, checked over the whole sequence (ValueError if not)."""
    if period < 1 or len(values) < period:
        raise ValueError("sequence shorter than its period")
    for i, v in enumerate(values):
        if abs(v - values[i % period]) > 1e-9 * max(1.0, abs(v)):
            raise ValueError(f"value {v} at {i} breaks period {period}")
    return list(values[:period])


def describe_pattern(axis: str, pattern: list[float], phase0: int) -> str:
    """'H: interior period 2: [2, 1] (max/min 2.0)', with zeros named when kernel < stride."""
    lo, hi = min(pattern), max(pattern)
    if axis == "all":
        spread = f"max/min {_num(hi / lo)}" if lo else "some pixels get no input"
        return f"whole interior: values {_num(lo)}..{_num(hi)} ({spread})"
    nums = ", ".join(_num(v) for v in pattern)
    if lo == 0:
        zeros = [(phase0 + i) % len(pattern) for i, v in enumerate(pattern) if v == 0]
        ratio = f"zeros at output phase(s) {zeros} mod {len(pattern)}: those pixels get no input"
    else:
        ratio = f"max/min {_num(hi / lo)}"
    return f"{axis}: interior period {len(pattern)}: [{nums}] ({ratio})"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def transposed_interior(length_in: int, kernel: int, stride: int, pad_begin: int,
                        dilation: int, output_padding: int) -> tuple[int, int, int]:
    """(start, stop, start mod stride) of the output positions every tap can reach from inside
    the input, for a 1-D transposed conv: the interior, free of border effects."""
    k_eff = dilation * (kernel - 1) + 1
    # Output o = i*stride - pad_begin + t*dilation; o is interior when every t in the kernel
    # lands on some valid i, i.e. o + pad_begin - (k_eff - 1) >= 0 and o + pad_begin <= (n-1)*s.
    start = max(0, k_eff - 1 - pad_begin)
    stop = (length_in - 1) * stride - pad_begin + 1
    return start, stop, start % stride


def input_length_for_pattern(kernel: int, stride: int, dilation: int, pad_begin: int) -> int:
    """An input length whose transposed-conv output has at least three full periods inside."""
    k_eff = dilation * (kernel - 1) + 1
    return (k_eff + pad_begin) // stride + 4


def axis_names(n: int) -> list[str]:
    return ["D", "H", "W"][-n:] if n <= 3 else [f"axis{i}" for i in range(n)]


def _transposed_geometry(attrs: Any) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, dilation, pad_begin, output_padding) per spatial axis."""
    n = len(attrs.kernel)
    dilation = attrs.dilation or (1,) * n
    out_pad = attrs.output_padding or (0,) * n
    pads = [p[0] for p in attrs.padding] if attrs.padding else [0] * n
    return list(zip(attrs.kernel, attrs.stride, dilation, pads, out_pad))


def axis_pattern(line: Any, kernel: int, stride: int, pad: int, dilation: int,
                 length: int) -> tuple[list[float], int]:
    """(one interior period indexed by output phase, 0) of a 1-D all-ones transposed conv."""
    start, stop, phase = transposed_interior(length, kernel, stride, pad, dilation, 0)
    interior = [float(v) for v in line[start:min(stop, len(line))]]
    period = periodic_pattern(interior, stride)
    # Rotate so that entry j holds the output pixels o with o mod stride == j.
    shift = (-phase) % stride
    return period[shift:] + period[:shift], 0


def block_pattern(values: Any, kernel, stride, pad, dilation, lengths) -> list[float]:
    """Every value of one interior period block of an N-d all-ones transposed conv output."""
    index = []
    for i in range(len(kernel)):
        start, _, _ = transposed_interior(lengths[i], kernel[i], stride[i], pad[i], dilation[i], 0)
        index.append(slice(start, start + stride[i]))
    return [float(v) for v in values[tuple(index)].ravel()]


def size_candidates(sweep: Any, nodes: str | list[str] | None) -> tuple[list, list]:
    """(sizes at which one of ``nodes`` is invalid, admissible sizes) from a SizeSweep, each a
    list of square sides in the sweep's order. Empty when unknown."""
    if sweep is None:
        return [], []
    try:
        sizes = list(_as_list(sweep.sizes))
        admissible = [bool(a) for a in _as_list(sweep.admissible)]
    except (AttributeError, TypeError):
        return [], []
    if isinstance(nodes, str):
        nodes = [nodes]
    failing = [False] * len(sizes)
    for node in nodes or ():
        try:
            mask = [bool(a) for a in _as_list(sweep.invalid_at(node))]
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
        failing = [f or bad for f, bad in zip(failing, mask)]
    return ([s for s, bad in zip(sizes, failing) if bad],
            [s for s, ok in zip(sizes, admissible) if ok])


def swept_admissible(sweep: Any, size: Any) -> bool | None:
    """Whether the sweep calls a square side admissible (None when it cannot say)."""
    if sweep is None or not isinstance(size, int):
        return None
    try:
        sizes = _as_list(sweep.sizes)
        return bool(_as_list(sweep.admissible)[sizes.index(size)])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def fed_layers(g: "nx.DiGraph", nodes: list[str]) -> list[str]:
    """``nodes`` and what they feed through ops that keep the features (activations, dropout,
    norms, flattens), up to and including the first linear/reshape: where a flatten's size
    dependence fails."""
    out, stack = list(nodes), list(nodes)
    while stack:
        for nxt in g.successors(stack.pop()):
            if nxt in out:
                continue
            op = g.nodes[nxt]["op"]
            if op in ("linear", "reshape"):
                out.append(nxt)
            elif op in ("pointwise", "norm", "flatten"):
                out.append(nxt)
                stack.append(nxt)
    return out


def _as_list(values: Any) -> list:
    tolist = getattr(values, "tolist", None)
    out = tolist() if tolist is not None else list(values)
    return [tuple(v) if isinstance(v, list) else v for v in out]


def resize(shape: tuple[int, ...], size: Any) -> tuple[int, ...]:
    """``shape`` with batch 1 and its spatial sizes set to ``size`` (an int or one per axis)."""
    n_spatial = len(shape) - 2
    sides = (int(size),) * n_spatial if isinstance(size, (int, float)) else tuple(size)
    if len(sides) != n_spatial:
        raise ValueError(f"size {size} does not fit shape {shape}")
    return (1, shape[1], *sides)


def nearest(sizes: list, target: tuple[int, ...]) -> Any:
    """The size closest to ``target`` (sum of per-axis distances), smaller first on ties."""

    def key(s: Any) -> tuple[int, int]:
        sides = (s,) * len(target) if isinstance(s, (int, float)) else tuple(s)
        return sum(abs(a - b) for a, b in zip(sides, target)), sum(sides)

    return min(sizes, key=key) if sizes else None


def nearest_admissible(sweep: Any, admissible: list, example: tuple[int, ...]) -> Any:
    """The admissible size nearest the example (smaller first on ties): the sweep's own
    ``nearest`` for a square example, else the closest entry of ``admissible``."""
    finder = getattr(sweep, "nearest", None)
    if finder is not None and len(set(example)) == 1:
        picks = [s for s in finder(example[0]) if s is not None]
        if picks:
            return min(picks, key=lambda s: (abs(s - example[0]), s))
    return nearest(admissible, example)


def rf_fields(g: "nx.DiGraph", node: str) -> tuple[Any, ...] | None:
    """The node's per-axis :class:`ReceptiveField` records when every axis is known and local
    (None for an unknown axis, a global node, or no spatial axes)."""
    data = g.nodes[node]
    rf = data.get("rf")
    if not rf or data.get("rf_global") or any(axis is None for axis in rf):
        return None
    return tuple(rf)


def rf_sizes(rf: Any) -> tuple[int, ...] | None:
    """Per-axis r (the largest span over a period) of an ``rf`` fact; None if any is unknown."""
    if not rf or any(axis is None for axis in rf):
        return None
    return tuple(int(axis.size) for axis in rf)


def size_dependent_op(g: "nx.DiGraph", node: str) -> str | None:
    """An op upstream of ``node`` (or itself) whose geometry the receptive-field pass read off
    the example size (an adaptive pool to t > 1, a resize to a given size, a slice from the
    end): the predicted field holds at the example size only. None when there is none."""
    import networkx as nx

    for name in (*nx.ancestors(g, node), node):
        data = g.nodes[name]
        if data.get("rf_global"):
            continue
        a = data["attrs"]
        if data["op"] == "adaptive_pool" and any(t not in (None, 1) for t in (a.size or ())):
            return name
        if data["op"] == "upsample" and (a.size is not None or a.size_from is not None):
            return name
        if data["op"] == "slice" and any(s[0] is not None and s[0] < 0 for s in a.slices or ()):
            return name
    return None


def global_ancestors(g: "nx.DiGraph", node: str) -> list[str]:
    """Nodes feeding ``node`` that see only globally pooled data (``rf_global``): the pass
    leaves them out of the field, so the probe detaches them."""
    import networkx as nx

    return [n for n in ops(g.subgraph(nx.ancestors(g, node))) if g.nodes[n].get("rf_global")]


def probe_unit(field: Any, out_len: int, in_len: int, margin: int) -> int | None:
    """The output unit nearest the centre of the map whose exact field lies inside an input of
    ``in_len`` pixels with ``margin`` to spare on both sides (None when none does)."""
    centre = (out_len - 1) // 2
    reach = field.period  # one period either side holds every phase
    for offset in range(reach + 1):
        for j in dict.fromkeys((centre - offset, centre + offset)):
            if not 0 <= j < out_len:
                continue
            span = field.bounds(j)
            if span is not None and span[0] >= margin and span[1] <= in_len - 1 - margin:
                return j
    return None


def support_bounds(mask: Any) -> tuple[tuple[int, int], ...] | None:
    """Per axis, the first and last index where an N-d boolean array (numpy) is True."""
    import numpy as np

    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others) if others else mask)
        out.append((int(hits[0]), int(hits[-1])))
    return tuple(out)


@dataclass(frozen=True)
class RFProbe:
    """Where the receptive-field probe runs: the input sides, and the output unit it reads
    (None: chosen once the map's size is seen, when the sweep does not know it)."""

    node: str
    sides: tuple[int, ...]
    unit: tuple[int, ...] | None


def spatial_rf_nodes(g: "nx.DiGraph") -> list[str]:
    """Ops (in topological order) whose output is a spatial map (> 1x1) with a known local RF."""
    out = []
    for name in ops(g):
        node = g.nodes[name]
        sp = spatial(node["shapes"][0] if node.get("shapes") else None)
        if node["op"] in ("input", "output") or sp is None or rf_fields(g, name) is None:
            continue
        if not _is_map(node.get("provenance")):
            continue  # tokens or channels-last: dims 2+ are no spatial axes to probe
        if all(d == 1 for d in sp):
            continue
        out.append(name)
    return out


def _is_map(dims: Any) -> bool:
    """An N, C, *spatial map (or a graph without provenance facts)."""
    if dims is None:
        return True
    from archlint.passes.token_fields import nc_plain

    return nc_plain(dims)


def global_claim(g: "nx.DiGraph") -> str | None:
    """The output node when the pass says every output value reads the whole input through
    token mixing (attention, a token MLP): the claim a gradient probe must back."""
    outs = [n for n in g if g.nodes[n]["op"] == "output"]
    if len(outs) != 1:
        return None
    data = g.nodes[outs[0]]
    flags = data.get("rf_global_axes") or ()
    if data.get("rf_global_cause") and flags and all(flags):
        return outs[0]
    return None


def last_spatial_node(g: "nx.DiGraph") -> str | None:
    """The last op whose output is a spatial map with a known RF."""
    nodes = spatial_rf_nodes(g)
    return nodes[-1] if nodes else None


def rf_probes(g: "nx.DiGraph", node: str, max_pixels: int) -> Iterator[RFProbe]:
    """Where to probe ``node``'s field, smallest input first: square inputs (admissible, when
    the sweep knows) at which a unit near the centre of the map has its whole predicted field
    inside the input with RF_MARGIN pixels to spare. A probe whose unit is None is a guess
    (the sweep does not know the map's size there): the run picks the unit, or moves on.

    Where the field was read off the example size (see :func:`size_dependent_op`) only the
    example size will do. Nothing is yielded when no input within ``max_pixels`` fits."""
    fields = rf_fields(g, node)
    example = spatial(tuple(g.graph["input_shapes"][0])) if g.graph.get("input_shapes") else None
    if fields is None or not example or len(fields) != len(example):
        return
    need = max(int(f.size) for f in fields) + 2 * RF_MARGIN
    if need > _largest_side(max_pixels, len(example)):
        return
    if size_dependent_op(g, node) is not None:
        candidates: list[tuple[int, ...]] = [tuple(example)]
    else:
        sides = _square_sides(g, node, need, max_pixels, len(example))
        candidates = [(n,) * len(example) for n in sides]
    sweep = g.graph.get("sizes")
    for sides in candidates:
        if math.prod(sides) > max_pixels or any(s < need for s in sides):
            continue
        out = _swept_output(sweep, node, sides) if len(set(sides)) == 1 else None
        if out is None and sides == tuple(example):
            out = spatial(g.nodes[node]["shapes"][0]) if g.nodes[node].get("shapes") else None
        if out is None:
            yield RFProbe(node, sides, None)
            continue
        unit = tuple(probe_unit(f, m, s, RF_MARGIN) for f, m, s in zip(fields, out, sides))
        if all(j is not None for j in unit):
            yield RFProbe(node, sides, unit)  # type: ignore[arg-type]
            return


def _square_sides(g: "nx.DiGraph", node: str, least: int, max_pixels: int,
                  n_axes: int) -> list[int]:
    """Square sides from ``least`` up to the pixel budget at which ``node``'s output exists
    (every op it depends on is valid; the probe runs nothing else), as the sweep says; else the
    sweep's admissible sides; without a sweep, ``least`` and its doublings (the run checks)."""
    import numpy as np

    top = _largest_side(max_pixels, n_axes)
    sweep = g.graph.get("sizes")
    try:
        sizes = np.asarray(sweep.sizes, dtype=np.int64)
        ok = np.asarray(sweep.admissible, dtype=bool)
    except (AttributeError, TypeError, ValueError):
        sides, n = [], least
        while n <= top:
            sides.append(n)
            n *= 2
        return sides
    arrays = _swept_spatial(sweep, node)
    if arrays is not None:
        ok = np.logical_and.reduce([np.asarray(a) > 0 for a in arrays])
    return [int(n) for n in sizes[ok & (sizes >= least) & (sizes <= top)]]


def _largest_side(max_pixels: int, n_axes: int) -> int:
    top = int(round(max_pixels ** (1 / n_axes))) + 1
    while top ** n_axes > max_pixels:
        top -= 1
    return top


def _swept_spatial(sweep: Any, node: str) -> tuple | None:
    spatial_of = getattr(sweep, "spatial", None)
    if spatial_of is None:
        return None
    try:
        return spatial_of(node)
    except (KeyError, ValueError):
        return None


def _swept_output(sweep: Any, node: str, sides: tuple[int, ...]) -> tuple[int, ...] | None:
    """The node's output spatial sizes at a square input, from the sweep (None if unknown)."""
    arrays = _swept_spatial(sweep, node)
    if arrays is None:
        return None
    index = sides[0] - sweep.lo
    if not 0 <= index < len(arrays[0]):
        return None
    out = tuple(int(a[index]) for a in arrays)
    return out if all(v > 0 for v in out) else None


def rf_verdict(g: "nx.DiGraph", probe: RFProbe, unit: tuple[int, ...],
               measured: tuple[tuple[int, int], ...] | None) -> dict[str, Any]:
    """Compare the measured span of one unit with the pass's exact bounds for that unit."""
    fields = rf_fields(g, probe.node) or ()
    predicted = tuple(f.bounds(j) for f, j in zip(fields, unit))
    out: dict[str, Any] = {
        "node": probe.node,
        "input": "x".join(map(str, probe.sides)),
        "unit": list(unit),
        "predicted": [b - a + 1 for a, b in predicted],
        "measured": None if measured is None else [b - a + 1 for a, b in measured],
        "predicted_bounds": [list(b) for b in predicted],
        "measured_bounds": None if measured is None else [list(b) for b in measured],
    }
    out["status"] = "confirmed" if measured == predicted else "refuted"
    phased = [(axis, f) for axis, f in zip(axis_names(len(fields)), fields) if f.period > 1]
    if phased:
        out["note"] = "units differ by phase (" + "; ".join(
            f"{axis}: period {f.period}, r {f.size} is the largest span" for axis, f in phased
        ) + f"): compared unit {tuple(unit)}'s exact bounds"
    return out


def rf_text(rf: dict[str, Any] | None) -> str | None:
    """One line for the text report: 'layer4: measured 435x435 = predicted (...)'."""
    if rf is None:
        return None
    status = rf.get("status")
    extra = rf.get("global")
    tail = "" if not extra else f"; global at {extra['node']}: {extra['status']} ({extra['note']})"
    if rf.get("kind") == "global":
        return f"{rf['node']}: global {rf['status']} ({rf['note']})"
    if status not in ("confirmed", "refuted"):
        note = rf.get("note")
        return f"{rf.get('node')}: not measured" + (f" ({note})" if note else "") + tail
    pred = "x".join(map(str, rf["predicted"]))
    meas = "x".join(map(str, rf["measured"] or ["?"]))
    spans = ", ".join(f"{a}..{b}" for a, b in rf["predicted_bounds"])
    where = f"unit {tuple(rf['unit'])} at input {rf['input']}, input pixels {spans}"
    if status == "confirmed":
        return f"{rf['node']}: measured {meas} = predicted ({where})" + tail
    got = ", ".join(f"{a}..{b}" for a, b in rf["measured_bounds"] or [])
    return f"{rf['node']}: measured {meas} ({got}) != predicted {pred} ({where}): archlint bug"


def finding_nodes(g: "nx.DiGraph", finding: "Finding") -> list[str]:
    """IR nodes a finding points at: same Location first, then same node name."""
    loc: Location = finding.location
    same = [n for n in g.nodes if g.nodes[n].get("location") == loc]
    if same:
        return same
    return [n for n in g.nodes if n == loc.node or g.nodes[n]["location"].node == loc.node]


def failure_reached(g: "nx.DiGraph", run: Run, nodes: list[str],
                    downstream: bool = True) -> str | None:
    """Evidence that the run failed at ``nodes`` (or, with ``downstream``, at an op they
    feed): text, else None."""
    import networkx as nx

    for n in nodes:
        if n in run.broadcasts:
            return (f"at input {run.size_text} the operands of {n} broadcast silently: "
                    f"{_shapes_text(run.broadcasts[n])}")
    if run.error is None:
        return None
    where = run.error_node
    if where is None or not nodes or any(
        where == n or (downstream and n in g and where in g and nx.has_path(g, n, where))
        for n in nodes
    ):
        at = f" at {where}" if where else ""
        return f"at input {run.size_text} it raised{at}: {run.error}"
    return None


# --------------------------------------------------------------------------------------------
# Per-finding logic, independent of the runtime


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
