"""Confirm on a device: run the model and mark each prediction confirmed or refuted.

``archlint model.py --confirm [--device DEV]`` calls :func:`confirm_report` on every ModelReport
after the static analysis. It never runs unless asked, and it only runs what it needs: batch 1
where it picks the size, the example input once, one failing and one admissible size per
size-dependent finding, one transposed-conv layer alone per checkerboard finding, and one
backward pass for the receptive field.

What it checks (each finding gets ``confirmation = {"status", "detail"}``; the model gets
``confirm = {"device", "shape_mismatches", "receptive_field", "seconds", ...}``):

* shapes: one forward at the example input; every tensor's real shape against ``shapes``.
  Any mismatch is an archlint bug, and ``confirm["shape_errors"]`` lists the first few.
* size-dependent findings: a run at the failing size nearest the example (the sizes at which
  the sweep's ``invalid_at`` marks the finding's op, or for a flatten the layer it feeds; a
  flatten the sweep names no failing size for is run at twice the example, and the sweep's
  silence is reported as an archlint bug if it raises there). An error raised there, or a merge
  whose operand spatial sizes differ and broadcast silently, confirms it; a run at the nearest
  predicted-admissible size (``SizeSweep.nearest``) should work.
* ``kernel-stride-checkerboard``: the layer alone, weights 1, constant input; the periodic
  pattern of its interior output.
* receptive field: a float64 copy with positive weights (1/fan-in), biases 0, max pools turned
  into average pools of the same geometry and activations into identities; one backward pass
  from one output unit of the deepest spatial map whose predicted field fits an input of
  ``max_probe_pixels`` (512x512 by default). The input is the smallest square at which that
  map exists (the sweep says which) and a unit near its centre has its whole predicted field
  inside the input with RF_MARGIN pixels to spare; the probe runs only the ops the map depends
  on. The extent of the nonzero input gradient along each axis must equal, exactly, the pass's
  ``ReceptiveField.bounds(unit)`` for that unit: after transposed convs or upsampling units
  differ by phase, and the unit's own bounds (not r, the largest over a period) are what is
  compared. Globally pooled branches (``rf_global``: SE gates, image pooling), which the pass
  leaves out of the local field, are detached for that comparison; a second backward checks
  that with them the unit reads the whole input. A field the pass read off the example size
  (adaptive pool to t > 1, a resize to a given size) is probed at the example size only.
  Torch only: onnxruntime has no backward pass, so on ONNX it is reported as not measured.

``confirm`` keys: ``device``, ``shape_mismatches``, ``shapes_compared``, ``shape_errors`` and
``note`` (only when shapes differ), ``example_error`` (the example input raised),
``receptive_field`` (None without a spatial map, else ``{"node", "status", "note"?}`` and, when
measured, ``"input"``, ``"unit"``, ``"predicted"``/``"measured"`` (the unit's span per axis) and
``"predicted_bounds"``/``"measured_bounds"`` (first and last input pixel per axis)), ``rf`` (that
comparison in one line, for the text report), ``seconds``, and ``error`` when the model could
not be run at all.

Torch is imported only inside the torch path, onnxruntime only inside the ONNX path.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from archlint.config import ConfigError
from archlint.graph import ELEMENTWISE_MERGES, Location, ops, spatial

if TYPE_CHECKING:
    import networkx as nx

    from archlint.findings import Finding, ModelReport

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


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """Raise ConfigError with a one-line reason unless ``device`` can run a model here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"--device {device!r}: not a device name (try cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ConfigError("--device meta: confirm needs a device that computes values")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s)")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: MPS is only available on Apple silicon macOS")
        return
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ConfigError(f"--device {device}: no {dev.type} device is available")


def confirm_report(model_report: "ModelReport", device: str = "cpu", *,
                   max_probe_pixels: int = MAX_PROBE_PIXELS) -> None:
    """Run the model on ``device`` and fill ``model_report.confirm`` and each finding's
    ``confirmation``. Raises ConfigError when the device is not there. The receptive-field
    probe measures the deepest map whose field fits an input of ``max_probe_pixels``."""
    started = time.perf_counter()
    g = model_report.graph
    if g is None:
        model_report.confirm = {"device": device, "error": "no graph was built: nothing to run"}
        _mark_unchecked(model_report.findings, "the model could not be built")
        return
    onnx = model_report.frontend == "onnx"
    if not onnx:
        check_device(device)
    summary: dict[str, Any] = {"device": "cpu (onnxruntime)" if onnx else device}
    try:
        confirmer = _OnnxConfirmer(g) if onnx else _TorchConfirmer(g, device)
        confirmer.max_probe_pixels = max_probe_pixels
        summary.update(confirmer.confirm(model_report.findings))
    except Exception as exc:  # a model that cannot run is a result, not a crash
        summary["error"] = f"could not run the model: {_one_line(exc)}"
        _mark_unchecked(model_report.findings, summary["error"])
    summary["seconds"] = round(time.perf_counter() - started, 3)
    model_report.confirm = summary


def _mark_unchecked(findings: Iterable["Finding"], why: str) -> None:
    for f in findings:
        if f.confirmation is None:
            f.confirmation = not_checked(why)


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
        if all(d == 1 for d in sp):
            continue
        out.append(name)
    return out


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
    if status not in ("confirmed", "refuted"):
        note = rf.get("note")
        return f"{rf.get('node')}: not measured" + (f" ({note})" if note else "")
    pred = "x".join(map(str, rf["predicted"]))
    meas = "x".join(map(str, rf["measured"] or ["?"]))
    spans = ", ".join(f"{a}..{b}" for a, b in rf["predicted_bounds"])
    where = f"unit {tuple(rf['unit'])} at input {rf['input']}, input pixels {spans}"
    if status == "confirmed":
        return f"{rf['node']}: measured {meas} = predicted ({where})"
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
# --------------------------------------------------------------------------------------------


class _Confirmer:
    """The checks; subclasses supply how to run the model and the layer."""

    g: "nx.DiGraph"
    max_probe_pixels: int = MAX_PROBE_PIXELS

    @property
    def example_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.g.graph.get("input_shapes", [])]

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        raise NotImplementedError

    def checkerboard_patterns(self, node: str) -> list[tuple[str, list[float], int]]:
        a = self.g.nodes[node]["attrs"]
        n = len(a.kernel)
        geometry = _transposed_geometry(a)
        patterns = []
        for axis, (k, s, d, p, op) in zip(axis_names(n), geometry):
            length = input_length_for_pattern(k, s, d, p)
            line = self._transposed_ones((k,), (s,), (p,), (d,), (op,), (length,))
            patterns.append((axis, *axis_pattern(line, k, s, p, d, length)))
        if n > 1:
            k, s, d, p, op = (tuple(v) for v in zip(*geometry))
            lengths = tuple(input_length_for_pattern(*g) for g in zip(k, s, d, p))
            patterns.append(("all", block_pattern(self._transposed_ones(k, s, p, d, op, lengths),
                                                  k, s, p, d, lengths), 0))
        return patterns

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------

    def confirm(self, findings: list["Finding"]) -> dict[str, Any]:
        self._runs = {}
        summary: dict[str, Any] = {}
        example = self.cached_run(self.example_shapes)
        mismatched, compared, shown = shape_mismatches(self.g, example)
        summary["shape_mismatches"] = mismatched
        summary["shapes_compared"] = compared
        if mismatched:
            summary["shape_errors"] = shown
            summary["note"] = (f"archlint bug: {mismatched} predicted shape(s) differ from the "
                               "real ones (please report it)")
        if example.error:
            summary["example_error"] = example.error
        rf = self.confirm_rf(self.max_probe_pixels)
        summary["receptive_field"] = rf
        if rf is not None:
            summary["rf"] = rf_text(rf)
        for f in findings:
            try:
                f.confirmation = self.confirm_finding(f, example)
            except Exception as exc:  # one check must not hide the others
                f.confirmation = not_checked(f"confirm failed: {type(exc).__name__}: {exc}")
        return summary

    def cached_run(self, input_shapes: list[tuple[int, ...]]) -> Run:
        key = tuple(input_shapes)
        if not hasattr(self, "_runs"):
            self._runs = {}
        if key not in self._runs:
            self._runs[key] = self.run_at(list(input_shapes))
        return self._runs[key]

    def confirm_finding(self, f: "Finding", example: Run) -> dict[str, str]:
        if f.rule == CHECKERBOARD_RULE:
            return self.confirm_checkerboard(f)
        if f.rule in SIZE_DEPENDENT_RULES:
            return self.confirm_size_dependent(f, example)
        return not_checked("this rule's prediction has no runtime check")

    # --- checkerboard -------------------------------------------------------------------------

    def confirm_checkerboard(self, f: "Finding") -> dict[str, str]:
        nodes = [n for n in finding_nodes(self.g, f) if self.g.nodes[n]["op"] == "conv_transpose"]
        if not nodes:
            return not_checked("no transposed convolution at this location")
        patterns = self.checkerboard_patterns(nodes[0])
        texts = [describe_pattern(axis, p, phase) for axis, p, phase in patterns]
        uneven = [p for _, p, _ in patterns if max(p) != min(p)]
        run_alone = "the layer alone (weights 1, constant input): "
        if uneven:
            return confirmed(run_alone + "; ".join(texts))
        return refuted(run_alone + "even coverage: " + "; ".join(texts))

    # --- size-dependent -----------------------------------------------------------------------

    def confirm_size_dependent(self, f: "Finding", example: Run) -> dict[str, str]:
        nodes = finding_nodes(self.g, f)
        node = nodes[0] if nodes else None
        sweep = self.g.graph.get("sizes")
        spatial_example = spatial(self.example_shapes[0]) if self.example_shapes else None
        if spatial_example is None:
            return not_checked("the input has no spatial axes to vary")
        if f.rule == "odd-size-stride2":
            return self.confirm_rounding(node, example, size_candidates(sweep, node)[0],
                                         spatial_example)

        # A flatten fails where the layer it feeds gets the wrong feature count.
        flatten = f.rule == "hardcoded-flatten"
        watched = fed_layers(self.g, nodes) if flatten else nodes
        downstream = f.rule == "spatial-collapse"
        failing, admissible = size_candidates(sweep, watched)
        sweep_note = ""
        if flatten and not failing:
            # A flatten tied to one size fails at any other: twice the example will do.
            doubled = tuple(2 * d for d in spatial_example)
            size = doubled[0] if len(set(doubled)) == 1 else doubled
            failing = [size]
            if swept_admissible(sweep, size):
                sweep_note = (f"; the size sweep names no failing size and calls {size} "
                              "admissible (archlint bug in the sizes pass)")
        evidence = failure_reached(self.g, example, watched, downstream)
        fail_run = example
        if evidence is None and failing:
            fail_run = self.cached_run(self.shapes_at(nearest(failing, spatial_example)))
            evidence = failure_reached(self.g, fail_run, watched, downstream)
        if evidence is None and f.rule == "spatial-collapse":
            evidence = self.collapse_seen(nodes, fail_run)
        tried = sorted({example.size_text, fail_run.size_text})
        admissible_note = self.admissible_note(admissible, spatial_example)
        if evidence is not None:
            return confirmed(evidence + admissible_note + (sweep_note if fail_run.error else ""))
        if fail_run is example and not failing:
            return not_checked(
                f"it runs at the example input {example.size_text}; the size sweep names no "
                "failing size to try" + admissible_note
            )
        return refuted(f"ran cleanly at input {' and '.join(tried)}" + admissible_note)

    def confirm_rounding(self, node: str | None, example: Run, failing: list,
                         spatial_example: tuple[int, ...]) -> dict[str, str]:
        if node is None:
            return not_checked("the finding's op is not in the graph")
        stride = self.g.nodes[node]["attrs"].stride
        runs = [example]
        if failing:
            runs.append(self.cached_run(self.shapes_at(nearest(failing, spatial_example))))
        for run in runs:
            seen = _rounding_seen(run, node, stride)
            if seen:
                return confirmed(f"at input {run.size_text}: {seen}")
        observed = [r for r in runs if node in r.operands and node in r.shapes]
        if not observed:
            return not_checked("the op's real sizes were not observed")
        r = observed[-1]
        return refuted(f"at input {r.size_text} {node} saw "
                       f"{_shapes_text(r.operands[node][:1])} -> {_shapes_text(r.shapes[node][:1])}: "
                       "every strided axis divides evenly")

    def collapse_seen(self, nodes: list[str], run: Run) -> str | None:
        for n in nodes:
            out = run.shapes.get(n)
            sp = spatial(out[0]) if out else None
            if sp is not None and any(d <= 1 for d in sp):
                return f"at input {run.size_text} {n} really outputs {_shapes_text(out[:1])}"
        return None

    def admissible_note(self, admissible: list, spatial_example: tuple[int, ...]) -> str:
        if not admissible:
            return ""
        size = nearest_admissible(self.g.graph.get("sizes"), admissible, spatial_example)
        run = self.cached_run(self.shapes_at(size))
        if run.error is None:
            return f"; at the predicted-admissible input {run.size_text} it runs"
        return (f"; but at the predicted-admissible input {run.size_text} it raised too "
                f"(archlint bug): {run.error}")

    def shapes_at(self, size: Any) -> list[tuple[int, ...]]:
        """Batch-1 input shapes at ``size``; other inputs of the same spatial size follow."""
        first = self.example_shapes[0]
        out = []
        for shape in self.example_shapes:
            if len(shape) == len(first) and shape[2:] == first[2:]:
                out.append(resize(shape, size))
            else:
                out.append((1, *shape[1:]))
        return out

    # --- receptive field ----------------------------------------------------------------------

    def confirm_rf(self, max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any] | None:
        """Measure the field of the last spatial map, or of the deepest one whose probe input
        fits ``max_pixels`` (a 1400-pixel field would need a 2800x2800 float64 run)."""
        nodes = spatial_rf_nodes(self.g)
        if not nodes:
            return None
        for node in reversed(nodes):
            probes = list(rf_probes(self.g, node, max_pixels))
            if probes:
                break
        else:
            last = nodes[-1]
            return {"node": last, "status": "not-checked",
                    "note": f"no input of at most {max_pixels} pixels holds the predicted field "
                            f"of any map (the last, {last}, has r "
                            f"{'x'.join(map(str, rf_sizes(self.g.nodes[last]['rf']) or ()))})"}
        out = self.confirm_rf_at(node, probes)
        if node != nodes[-1]:
            last = "x".join(map(str, rf_sizes(self.g.nodes[nodes[-1]]["rf"]) or ()))
            out["note"] = (f"measured at {node}, the deepest map whose probe fits {max_pixels} "
                           f"input pixels; the last map {nodes[-1]} has a predicted r of {last}. "
                           + out.get("note", "")).strip()
        return out

    def confirm_rf_at(self, node: str, probes: list[RFProbe] | None = None,
                      max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any]:
        """Probe ``node``'s field (at the given probes, else the planned ones)."""
        if probes is None:
            probes = list(rf_probes(self.g, node, max_pixels))
        if not probes:
            return {"node": node, "status": "not-checked",
                    "note": f"no input of at most {max_pixels} pixels holds its predicted field"}
        try:
            return self.measure_rf(probes)
        except Exception as exc:
            return {"node": node, "status": "not-checked",
                    "note": f"probe failed: {type(exc).__name__}: {exc}"}

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        raise NotImplementedError


def _rounding_seen(run: Run, node: str, stride: tuple[int, ...]) -> str | None:
    """'57x57 -> 29x29: 57/2 rounded' when a strided axis of the op's real input does not divide."""
    operands, outs = run.operands.get(node), run.shapes.get(node)
    if not operands or not outs:
        return None
    sp_in, sp_out = spatial(operands[0]), spatial(outs[0])
    if sp_in is None or sp_out is None or len(stride) != len(sp_in):
        return None
    uneven = [(i, s) for i, (i_, s) in enumerate(zip(sp_in, stride)) if s > 1 and sp_in[i] % s]
    if not uneven:
        return None
    parts = ", ".join(
        f"{sp_in[i]}/{s} = {sp_in[i] / s:g} became {sp_out[i]}" for i, s in uneven
    )
    return (f"{node} really maps {'x'.join(map(str, sp_in))} -> {'x'.join(map(str, sp_out))} "
            f"({parts})")


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------


class _TorchConfirmer(_Confirmer):
    def __init__(self, g: "nx.DiGraph", device: str) -> None:
        import torch

        self.torch = torch
        self.g = g
        self.device = torch.device(device)
        self.fx_names: dict[str, str] = dict(g.graph.get("fx_names") or {})
        self._module = None
        self._gm = None

    def confirm(self, findings: list["Finding"]) -> dict[str, Any]:
        try:
            return super().confirm(findings)
        finally:
            self._module = self._gm = None
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()

    # --- building ------------------------------------------------------------------------------

    def fresh_module(self) -> Any:
        """A new copy of the model with real (random) weights, on the CPU, in eval mode."""
        torch = self.torch
        factory: Callable[[], Any] | None = self.g.graph.get("module_factory")
        if factory is not None:
            with torch.device("cpu"):
                module = factory()
        else:
            module = self.g.graph.get("module")
            if module is None:
                raise RuntimeError("the graph carries no module to run")
            module = copy.deepcopy(module)
        if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
            module = _materialize(module)
        return module.eval()

    def module(self) -> Any:
        if self._module is None:
            self._module = self.fresh_module().to(self.device)
        return self._module

    def graph_module(self, module: Any) -> Any:
        """The traced fx graph bound to ``module``'s real weights (re-traced if not given)."""
        fx = self.torch.fx
        traced = self.g.graph.get("graph_module")
        if traced is not None:
            return fx.GraphModule(module, copy.deepcopy(traced.graph))
        if self.g.graph.get("input_structured"):
            # dict or keyword inputs run only through the fx graph's one placeholder per tensor
            raise RuntimeError("a model with dict or keyword inputs needs its fx graph to run")
        # Re-trace with the frontend's tracer so that fx node names match ``fx_names``.
        try:
            from archlint.frontends.torch import _ArchlintTracer as Tracer
        except ImportError:
            Tracer = fx.Tracer
        return fx.GraphModule(module, Tracer().trace(module, concrete_args=_defaults_past(
            module, len(self.example_shapes))))

    # --- one run -------------------------------------------------------------------------------

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        torch = self.torch
        run = Run(input_shapes=list(input_shapes))
        module = self.module()
        if self._gm is None:
            try:
                self._gm = self.graph_module(module)
            except Exception:
                if self.g.graph.get("input_structured"):
                    raise  # no way to call forward with its dict or keywords: nothing confirmed
                self._gm = False
        inputs = [torch.randn(s, device=self.device) for s in input_shapes]
        with torch.no_grad():
            if self._gm is False:
                # No fx graph: run the model itself; shapes cannot be matched to nodes.
                try:
                    module(*inputs)
                except Exception as exc:
                    run.error = _one_line(exc)
            else:
                interp = _recording_interpreter()(self._gm, self.fx_names, self.g, run)
                try:
                    interp.run(*inputs)
                except _NodeFailed as failed:
                    run.error, run.error_node = failed.reason, failed.ir_node
                finally:
                    interp.env.clear()
        del inputs
        return run

    # --- checkerboard -------------------------------------------------------------------------

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        """The output (numpy) of a 1-in/1-out transposed conv, weights 1, no bias, on ones."""
        torch = self.torch
        conv_cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
                    3: torch.nn.ConvTranspose3d}[len(kernel)]
        layer = conv_cls(1, 1, kernel, stride, padding=padding, dilation=dilation,
                         output_padding=output_padding, bias=False)
        layer = layer.to(self.device, torch.float64)
        with torch.no_grad():
            layer.weight.fill_(1.0)
            out = layer(torch.ones((1, 1, *lengths), dtype=torch.float64, device=self.device))
        values = out[0, 0].cpu().numpy()
        del layer, out
        return values

    # --- receptive field ----------------------------------------------------------------------

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        """Backprop one unit of a float64, positive-weight, average-pool copy and compare the
        extent of the nonzero input gradient with the pass's exact bounds for that unit."""
        torch = self.torch
        node = probes[0].node
        targets = [fx for fx, ir in self.fx_names.items() if ir == node]
        if not targets:
            return {"node": node, "status": "not-checked", "note": "no traced op to read"}
        target = node if node in targets else targets[-1]
        global_nodes = global_ancestors(self.g, node)
        detach = {fx for fx, ir in self.fx_names.items() if ir in set(global_nodes)}
        # MPS has no float64: probe there on the CPU.
        device = torch.device("cpu") if self.device.type == "mps" else self.device
        gm = self.graph_module(_positive_copy(copy.deepcopy(self.module()), torch).to(device))
        fields = rf_fields(self.g, node) or ()
        try:
            for probe in probes:
                unit, support = self._gradient_support(gm, target, probe, fields, detach, device)
                if unit is None:
                    continue  # the sweep did not know the map's size, and no unit fit
                placed = RFProbe(node, probe.sides, unit)
                out = rf_verdict(self.g, placed, unit, support)
                if global_nodes:
                    out = self._with_global_branches(out, gm, target, placed, fields, device,
                                                     global_nodes)
                return out
            tried = ", ".join("x".join(map(str, p.sides)) for p in probes)
            return {"node": node, "status": "not-checked",
                    "note": f"at input {tried} no unit's predicted field lies inside the input"}
        finally:
            del gm
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def _gradient_support(self, gm: Any, target: str, probe: RFProbe, fields: tuple,
                          detach: set[str], device: Any) -> tuple[tuple[int, ...] | None, Any]:
        """(unit, per-axis nonzero-gradient bounds) of one backward pass; unit None when the
        probe left it open and no unit of the real map fits the input."""
        torch = self.torch
        shapes = self.shapes_at(probe.sides)
        x = torch.ones(shapes[0], dtype=torch.float64, device=device, requires_grad=True)
        others = [torch.ones(s, dtype=torch.float64, device=device) for s in shapes[1:]]
        with _AveragePools(torch):
            fmap = _run_until(gm, target, [x, *others], detach)
        unit = probe.unit
        if unit is None:
            picked = tuple(probe_unit(f, m, s, RF_MARGIN)
                           for f, m, s in zip(fields, fmap.shape[2:], probe.sides))
            if any(j is None for j in picked):
                return None, None
            unit = picked  # type: ignore[assignment]
        fmap[(0, 0, *unit)].backward()
        if x.grad is None:  # the map does not depend on this input at all
            return unit, None
        mask = (x.grad[0] != 0).any(0).cpu().numpy()
        del fmap, x, others
        return unit, support_bounds(mask)

    def _with_global_branches(self, out: dict[str, Any], gm: Any, target: str, probe: RFProbe,
                              fields: tuple, device: Any, global_nodes: list[str]) -> dict[str, Any]:
        """The pass leaves globally pooled branches (SE gates, image pooling) out of the field
        and marks them ``rf_global``: check that with them the unit reads the whole input."""
        _, support = self._gradient_support(gm, target, probe, fields, set(), device)
        whole = tuple((0, s - 1) for s in probe.sides)
        shown = ", ".join(global_nodes[:3]) + (", ..." if len(global_nodes) > 3 else "")
        if support == whole:
            seen = "with them the unit reads the whole input, as rf_global says"
        else:
            out["status"] = "refuted"
            seen = f"with them the unit reads {support}, not the whole input {whole}"
        out["note"] = (f"the globally pooled branches ({shown}) were detached, since the pass "
                       f"leaves them out of the local field; {seen}. " + out.get("note", "")).strip()
        return out


def _defaults_past(module: Any, n_inputs: int) -> dict[str, Any] | None:
    """forward's parameters past the given inputs, at their defaults (as the frontend traces)."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    concrete = {p.name: p.default for p in params[n_inputs:]
                if p.default is not inspect.Parameter.empty}
    return concrete or None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class _NodeFailed(Exception):
    def __init__(self, ir_node: str | None, reason: str) -> None:
        super().__init__(reason)
        self.ir_node, self.reason = ir_node, reason


class _StopAt(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


@functools.lru_cache(maxsize=None)
def _recording_interpreter():
    import torch
    from torch.utils._pytree import tree_leaves

    class RecordingInterpreter(torch.fx.Interpreter):
        """Runs the traced graph and records every mapped node's real shapes into a Run."""

        def __init__(self, gm, fx_names: dict[str, str], g, run: Run) -> None:
            super().__init__(gm)
            self.extra_traceback = False
            self.fx_names, self.g, self.record = fx_names, g, run

        def run_node(self, n):
            ir = self.fx_names.get(n.name)
            if ir is not None and n.op not in ("placeholder", "get_attr"):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                operands = [tuple(t.shape) for t in tree_leaves((args, kwargs))
                            if isinstance(t, torch.Tensor)]
                self.record.operands[ir] = operands
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailed(ir or n.name, _one_line(exc)) from None
            if ir is not None and n.op not in ("placeholder", "get_attr"):
                # It ran although the operands' spatial sizes differ: a silent broadcast.
                operands = self.record.operands[ir]
                if self.g.nodes[ir]["op"] in ELEMENTWISE_MERGES and differing_spatial(operands):
                    self.record.broadcasts[ir] = operands
            # The fx node named like the IR node is the op itself; others (getitem aliases)
            # only fill in when it gave nothing.
            if ir is not None and (n.name == ir or ir not in self.record.shapes):
                shapes = tuple(tuple(t.shape) for t in tree_leaves(result)
                               if isinstance(t, torch.Tensor))
                if shapes:
                    self.record.shapes[ir] = shapes
            return result

    return RecordingInterpreter




def _materialize(module: Any) -> Any:
    """Give a meta-device model real random weights: fresh storage, then each layer's own
    ``reset_parameters`` (the same initialization a CPU-built model gets)."""
    module = module.to_empty(device="cpu")
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def _positive_copy(module: Any, torch: Any) -> Any:
    """``module`` in float64 with every weight a positive constant and biases 0, so each input
    pixel inside the receptive field reaches the output with a nonzero gradient."""
    nn = torch.nn
    module = module.double().eval().requires_grad_(False)  # only the input's gradient is read
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)):
                # 1/fan-in keeps activations O(1) through deep nets (no overflow, no underflow).
                sub.weight.fill_(1.0 / max(1, sub.weight[0].numel()))
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.modules.batchnorm._NormBase):
                if sub.track_running_stats and sub.running_mean is not None:
                    sub.reset_running_stats()
                if sub.affine:
                    sub.weight.fill_(1.0)
                    sub.bias.zero_()
    return module


def _run_until(gm: Any, fx_name: str, inputs: list, detach: set[str] = frozenset()) -> Any:
    """Run only what the fx node ``fx_name`` depends on and return its value (autograd on),
    cutting the gradient at the fx nodes in ``detach``. A branch that fails at this input
    size but does not feed ``fx_name`` is never run."""
    import torch
    from torch.utils._pytree import tree_map

    def cut(value: Any) -> Any:
        return value.detach() if isinstance(value, torch.Tensor) else value

    needed = _fx_ancestors(gm, fx_name)

    class Truncated(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name not in needed and n.op != "placeholder":
                return None
            value = super().run_node(n)
            if n.name in detach:
                value = tree_map(cut, value)
            if n.name == fx_name:
                raise _StopAt(value)
            return value

    interp = Truncated(gm)
    interp.extra_traceback = False
    try:
        interp.run(*inputs)
    except _StopAt as stop:
        return stop.value
    finally:
        interp.env.clear()
    raise RuntimeError(f"{fx_name} was never reached")


def _fx_ancestors(gm: Any, fx_name: str) -> set[str]:
    """Names of the fx node ``fx_name`` and every node it reads, directly or not."""
    by_name = {n.name: n for n in gm.graph.nodes}
    if fx_name not in by_name:
        raise RuntimeError(f"{fx_name} is not in the traced graph")
    seen, stack = set(), [by_name[fx_name]]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.all_input_nodes)
    return seen


class _AveragePools:
    """A TorchFunctionMode for the receptive-field probe: max pools become average pools of the
    same geometry (every window pixel gets gradient), and pointwise activations and norms that
    could saturate or mix the whole map become identities (the RF treats them as pointwise)."""

    def __init__(self, torch: Any) -> None:
        from torch.overrides import TorchFunctionMode

        F = torch.nn.functional
        pools = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}
        adaptive = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                    F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                    F.adaptive_max_pool3d: F.adaptive_avg_pool3d}
        identities = {
            F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
            F.mish, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.softplus, F.dropout,
            F.dropout1d, F.dropout2d, F.dropout3d, F.group_norm, F.layer_norm, F.instance_norm,
            torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
            torch.Tensor.relu, torch.Tensor.relu_, torch.Tensor.sigmoid, torch.Tensor.tanh,
            torch.Tensor.clamp, torch.Tensor.clamp_, torch.Tensor.clip,
        }
        def as_average(dims: int, args: tuple, kwargs: dict) -> Any:
            a = dict(_MAX_POOL_DEFAULTS, **dict(zip(_MAX_POOL_PARAMS, args)), **kwargs)
            stride = a["stride"] if a["stride"] not in (None, []) else a["kernel_size"]
            dilation = _tuple(a["dilation"], dims)
            if all(d == 1 for d in dilation):
                avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
                out = avg(a["input"], a["kernel_size"], stride, a["padding"], a["ceil_mode"])
            else:  # avg pools have no dilation: a depthwise all-ones conv of the same geometry
                x = a["input"]
                kernel = _tuple(a["kernel_size"], dims)
                weight = x.new_ones((x.shape[1], 1, *kernel))
                conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
                out = conv(x, weight, None, stride, a["padding"], dilation, x.shape[1])
            return (out, None) if a["return_indices"] else out

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in pools:
                    return as_average(pools[func], args, kwargs)
                if func in adaptive:
                    return adaptive[func](args[0] if args else kwargs["input"],
                                          args[1] if len(args) > 1 else kwargs["output_size"])
                if func in identities:
                    return args[0] if args else kwargs["input"]
                return func(*args, **kwargs)

        self.mode = Mode()

    def __enter__(self) -> "_AveragePools":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


#: F.max_poolNd's parameters, in order, and their defaults.
_MAX_POOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                    "return_indices")
_MAX_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                      "return_indices": False}


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n


# --------------------------------------------------------------------------------------------
# ONNX (onnxruntime; never torch)
# --------------------------------------------------------------------------------------------


class _OnnxConfirmer(_Confirmer):
    def __init__(self, g: "nx.DiGraph") -> None:
        import numpy as np
        import onnx

        self.np, self.onnx, self.g = np, onnx, g
        self.model = _onnx_model(g, onnx)
        #: ONNX tensor name -> the IR node that produces it.
        self.producers: dict[str, str] = {}
        for index, node in enumerate(self.model.graph.node):
            # The frontend names an unnamed node '<op_type>_<index in the file>'.
            ir = next((c for c in (node.name or f"{node.op_type}_{index}", *node.output)
                       if c and c in g), None)
            if ir is not None:
                for i, out in enumerate(node.output):
                    self.producers.setdefault(out, ir)
        for value in self.model.graph.input:
            if value.name in g:
                self.producers[value.name] = value.name
        self.rng = np.random.default_rng(0)

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        import onnxruntime as ort

        np = self.np
        run = Run(input_shapes=list(input_shapes))
        model = self._runnable(resized=input_shapes != self.example_shapes)
        names = [o.name for o in model.graph.output]
        inputs = [v for v in model.graph.input if v.name not in _initializer_names(model)]
        feeds = {
            v.name: self.rng.standard_normal(shape).astype(_np_dtype(v, np))
            for v, shape in zip(inputs, input_shapes)
        }
        try:
            session = ort.InferenceSession(model.SerializeToString(), _quiet_session(ort),
                                           providers=["CPUExecutionProvider"])
            values = session.run(names, feeds)
        except Exception as exc:
            run.error = _ort_reason(exc)
            run.error_node = self._failed_node(str(exc))
            return run
        by_name = {n: tuple(np.shape(v)) for n, v in zip(names, values)}
        for out, ir in self.producers.items():
            if out in by_name:
                run.shapes[ir] = run.shapes.get(ir, ()) + (by_name[out],)
        for node in model.graph.node:
            ir = self.producers.get(node.output[0]) if node.output else None
            if ir is None:
                continue
            operands = [by_name[i] for i in node.input if i in by_name]
            run.operands[ir] = operands
            if self.g.nodes[ir]["op"] in ELEMENTWISE_MERGES and differing_spatial(operands):
                run.broadcasts[ir] = operands
        del values
        return run

    def _runnable(self, resized: bool) -> Any:
        """The model with every intermediate tensor as an output, random weights where the file
        keeps them outside, and (``resized``) symbolic spatial input sizes."""
        onnx = self.onnx
        model = copy.deepcopy(self.model)
        for init in model.graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                array = self.rng.standard_normal(tuple(init.dims)).astype(
                    onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
                init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
        initializers = _initializer_names(model)
        if resized:
            del model.graph.value_info[:]
            for value in model.graph.input:
                if value.name in initializers:
                    continue
                dims = value.type.tensor_type.shape.dim
                for axis, dim in enumerate(dims):
                    dim.Clear()
                    dim.dim_param = f"archlint_{value.name}_{axis}"
        present = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for out in node.output:
                if out and out not in present:
                    model.graph.output.append(onnx.ValueInfoProto(name=out))
                    present.add(out)
        return model

    def _failed_node(self, message: str) -> str | None:
        import re

        m = re.search(r"Name:'([^']*)'", message) or re.search(r"[Nn]ode \(([^)]*)\)", message)
        if not m:
            return None
        for node in self.model.graph.node:
            if node.name == m.group(1):
                return next((self.producers[o] for o in node.output if o in self.producers), None)
        return m.group(1) if m.group(1) in self.g else None

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        """The output of a one-node ConvTranspose model, weights 1, on ones (onnxruntime)."""
        import onnxruntime as ort

        onnx, np = self.onnx, self.np
        helper = onnx.helper
        layer = helper.make_node(
            "ConvTranspose", ["x", "w"], ["y"], kernel_shape=list(kernel), strides=list(stride),
            dilations=list(dilation), output_padding=list(output_padding),
            pads=list(padding) * 2,
        )
        # float32: onnxruntime has no double ConvTranspose, and small tap counts are exact.
        weight = onnx.numpy_helper.from_array(np.ones((1, 1, *kernel), np.float32), "w")
        graph = helper.make_graph(
            [layer], "checkerboard",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, *lengths])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            initializer=[weight],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), _quiet_session(ort),
                                       providers=["CPUExecutionProvider"])
        (out,) = session.run(["y"], {"x": np.ones((1, 1, *lengths), np.float32)})
        return out[0, 0]

    def confirm_rf(self, max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any] | None:
        last = last_spatial_node(self.g)
        if last is None:
            return None
        return {"node": last, "status": "not-checked",
                "note": "onnxruntime runs no backward pass, so ONNX fields are not measured"}

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        return self.confirm_rf() or {}


def _onnx_model(g: "nx.DiGraph", onnx: Any) -> Any:
    model = g.graph.get("onnx_model")
    if model is not None:
        return model
    target = g.graph.get("target")
    if not target:
        raise RuntimeError("the graph carries neither the ONNX model nor its file")
    return onnx.load(target, load_external_data=False)


def _quiet_session(ort: Any) -> Any:
    """Session options that keep onnxruntime's own error log off the user's terminal."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return options


def _ort_reason(exc: BaseException) -> str:
    """The useful part of an onnxruntime error: the op and its status message."""
    import re

    text = " ".join(str(exc).split())
    m = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if not m:
        return _one_line(exc)
    message = m.group(3)
    # drop the source location and the failed C++ assertion in front of the real reason
    message = re.sub(r"^\S+:\d+ .*? was false\. ", "", message)
    return f"{m.group(1)} {m.group(2)!r}: {message}"


def _initializer_names(model: Any) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _np_dtype(value: Any, np: Any) -> Any:
    import onnx

    elem = value.type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else np.float32
