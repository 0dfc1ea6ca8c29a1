"""Merges whose branches disagree on a spatial size, and the op where the branches part.

``merge_mismatch_pass(g)`` runs after the sizes pass (it reads the input-size sweep, to tell an
intended broadcast from an accidental one) and writes on every node:

``size_mismatch``
    On merges (add/sub/mul/div/concat): a tuple of :class:`Disagreement` (operand pairs that
    disagree on a spatial size, broadcasts of an axis that is 1 only at this size included);
    ``()`` elsewhere. skip-connection-mismatch (AL101) reports them, shape-propagation-error
    defers to it there.
``size_mismatch_cause``
    For a merge with disagreements: the :class:`Cause` of the first one (both branches walked
    back to their fork, and the ops whose sizes depart from nominal scaling), else None.
``breaks_merge``
    On the first such op of a cause: the merge it breaks (odd-size-stride2, AL104, names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

import networkx as nx
import numpy as np

from archlint.graph import MERGES, ops, ops_of_kind, output_shape
from archlint.passes.fact_index import indexed, record

WINDOWED = ("conv", "max_pool", "avg_pool", "lp_pool")
#: g.graph key of the merges with a size mismatch (archlint.passes.fact_index)
MISMATCH_INDEX = "_mismatched_merges"

#: Ops that make a map's size independent of its input's (the grid is fixed there).
GRID_FIXING = ("global_pool", "adaptive_pool")


@dataclass(frozen=True)
class Disagreement:
    """Two merge operands that disagree on some axes (axis indices of the operands' frame)."""

    merge: str
    ref: str
    other: str
    axes: tuple[int, ...]
    ref_shape: tuple[int, ...]
    other_shape: tuple[int, ...]
    broadcast: bool  # the merge runs, stretching a size-1 axis


@dataclass(frozen=True)
class Step:
    """An op on a branch whose output size departs from its nominal scaling (in fork pixels)."""

    node: str
    delta: Fraction
    size_in: int
    size_out: int
    scale_in: Fraction  # the branch's scale relative to the fork, before this op
    factor: Fraction  # how the op is meant to scale the size

    @property
    def nominal(self) -> Fraction:
        """The size the op should have given (its input size, scaled), in its own pixels."""
        return Fraction(self.size_out) - self.delta * self.scale_in * self.factor


# ---------------------------------------------------------------------------------------------
# Detection


def disagreements(g: nx.DiGraph, merge: str) -> list[Disagreement]:
    """Operand pairs of a merge that disagree on a size: for a concat the first operand against
    each other one, for an elementwise merge the widest operand against each other one."""
    table = g._node
    node = table[merge]
    if node["op"] not in MERGES:
        return []
    operands = [p for p in dict.fromkeys(node["inputs"]) if output_shape(g, p) is not None]
    if len(operands) < 2:
        return []
    first = table[operands[0]]["shapes"][0]
    if all(table[p]["shapes"][0] == first for p in operands[1:]):
        return []  # operands of one shape disagree on nothing (most merges of a large graph)
    if node["op"] == "concat":
        return _concat_disagreements(g, merge, operands)
    return _elementwise_disagreements(g, merge, operands)


def _concat_disagreements(g, merge, operands) -> list[Disagreement]:
    shapes = [output_shape(g, p) for p in operands]
    rank = len(shapes[0])
    if rank < 3 or any(len(s) != rank for s in shapes):
        return []
    axis = g.nodes[merge]["attrs"].axis
    axis = 1 if axis is None else axis % rank
    found = []
    for other, shape in zip(operands[1:], shapes[1:]):
        axes = tuple(i for i in range(rank) if i != axis and shape[i] != shapes[0][i])
        if any(i >= 2 for i in axes):
            found.append(Disagreement(merge, operands[0], other, axes, shapes[0], shape, False))
    return found


def _elementwise_disagreements(g, merge, operands) -> list[Disagreement]:
    shapes = [output_shape(g, p) for p in operands]
    rank = max(len(s) for s in shapes)
    if rank < 3:
        return []
    framed = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    ref = max(range(len(operands)), key=lambda i: (len(shapes[i]) >= 3, np.prod(framed[i][2:])))
    verdict: list[bool | None] = []  # read from the sweep only where a branch is 1 pixel wide
    found = []
    for i, other in enumerate(operands):
        if i == ref:
            continue
        axes, stretched = [], []
        for ax in range(2, rank):
            a, b = framed[ref][ax], framed[i][ax]
            if a == b:
                continue
            if 1 in (a, b):
                stretched.append((ax - rank, operands[i] if b == 1 else operands[ref]))
            else:
                axes.append(ax)
        if stretched and not verdict:
            # (asking the sweep at every merge would recompute evicted arrays on big graphs)
            verdict.append(_sweep_verdict(g, merge, operands, shapes))
        accidental = [ax + rank for ax in _accidental(g, verdict[0] if verdict else None,
                                                      stretched, bool(axes))]
        axes = sorted(axes + accidental)
        if axes:
            found.append(
                Disagreement(merge, operands[ref], other, tuple(axes), framed[ref], framed[i],
                             bool(accidental) and all(1 in (framed[ref][a], framed[i][a]) for a in axes))
            )
    return found


def _accidental(g, verdict: bool | None, stretched: list[tuple[int, str]], mismatched: bool) -> list[int]:
    """The broadcast axes (counted from the end) that are not intended.

    A size-1 axis broadcasts on purpose when it is 1 at every input size (global or adaptive
    pooling to 1, a view adding the axis, a parameter): that is how the sizes pass decides it
    (a 1 that depends on the input size does not broadcast there), so its verdict on this merge
    at the example size is read first. Without one, the same criterion is judged on the graph.
    """
    if not stretched:
        return []
    if verdict is None:
        return [ax for ax, thin in stretched if not _fixed_size(g, thin, ax)]
    if verdict is False:
        return []  # the sweep: this merge agrees at the example size
    sweep = size_sweep(g)
    varying = [ax for ax, thin in stretched if not _one_at_every_size(sweep, thin, ax)]
    if varying or mismatched:
        return varying
    return [ax for ax, _ in stretched]  # the sweep fails the merge for these broadcasts alone


def _sweep_verdict(g, merge: str, operands: list[str], shapes) -> bool | None:
    """Does the input-size sweep fail this merge at the example size (True), pass it (False),
    or not know (None: no sweep, the example outside its range, or sizes it lost track of)?"""
    sweep = size_sweep(g)
    at = _example_index(sweep) if sweep is not None else None
    if at is None:
        return None
    name, index = at
    try:
        if sweep.spatial(merge, name) is None or any(
            sweep.spatial(p, name) is None for p, shape in zip(operands, shapes) if len(shape) >= 3
        ):
            return None
        return bool(sweep.invalid_at(merge, name)[index])
    except (KeyError, ValueError, IndexError, AttributeError):
        return None


def _example_index(sweep) -> tuple[str, int] | None:
    """(sweep name, index) of the example input in the sweep: the first per-axis sweep at
    n = example[0] holds every axis at its example size (the square sweep for 1-d inputs)."""
    example, axes = getattr(sweep, "example", None), getattr(sweep, "axes", None)
    lo, hi = getattr(sweep, "lo", None), getattr(sweep, "hi", None)
    if not example or axes is None or lo is None or len(example) != axes or not lo <= example[0] <= hi:
        return None
    return ("square" if axes == 1 else sweep.axis_names[0]), int(example[0]) - lo


def _one_at_every_size(sweep, node: str, axis_from_end: int) -> bool:
    """True when the sweep has ``node`` 1 pixel on this axis wherever it is defined."""
    arrays = sweep.spatial(node)
    if arrays is None:
        return False
    if len(arrays) < -axis_from_end:
        return True  # the axis is not the node's own: a view adds it
    values = np.asarray(arrays[axis_from_end])
    values = values[values > 0]
    return values.size > 0 and bool(np.all(values == 1))


def _fixed_size(g: nx.DiGraph, node: str, axis_from_end: int) -> bool:
    """Is ``node``'s size on this axis the same at every input size? Walks back to where the
    size comes from: global/adaptive pooling or a fixed-size resize fix it, a view or a
    parameter sets it, the model input does not; a window (even one that happens to cover the
    whole map at the example size) only passes its input's size on."""
    seen = set()
    while node not in seen:
        seen.add(node)
        data = g.nodes[node]
        op = data["op"]
        if op in GRID_FIXING or op in ("reshape", "flatten"):
            return True
        if op == "upsample" and data["attrs"].size is not None and data["attrs"].size_from is None:
            return True
        if op == "input":
            return False
        inputs = [p for p in dict.fromkeys(data["inputs"]) if output_shape(g, p) is not None]
        if not inputs:
            return True  # a constant or parameter
        with_axis = [p for p in inputs if len(output_shape(g, p)) >= -axis_from_end]
        if not with_axis:
            return True  # the axis was added here (unsqueeze / view)
        node = with_axis[0]
    return True


# ---------------------------------------------------------------------------------------------
# Root cause: walk both branches back to their fork


def _rank(g: nx.DiGraph) -> dict[str, int]:
    return {n: i for i, n in enumerate(ops(g))}


def fork_of(g: nx.DiGraph, a: str, b: str) -> str | None:
    """The latest op both branches descend from (either operand itself if one feeds the other)."""
    common = (nx.ancestors(g, a) | {a}) & (nx.ancestors(g, b) | {b})
    if not common:
        return None
    rank = _rank(g)
    return max(common, key=rank.__getitem__)


def branch(g: nx.DiGraph, fork: str, end: str) -> list[str] | None:
    """A chain of ops from ``fork`` to ``end`` (inclusive), preferring each op's first operand."""
    reach = nx.descendants(g, fork) | {fork}
    chain = [end]
    while chain[-1] != fork:
        preds = [p for p in dict.fromkeys(g.nodes[chain[-1]]["inputs"]) if p in reach]
        if not preds:
            return None
        chain.append(preds[0])
    return chain[::-1]


def _size(g, node, axis) -> int | None:
    shape = output_shape(g, node)
    if shape is None or len(shape) < 3 or len(shape) <= axis:
        return None
    return shape[axis]


def nominal_factor(g: nx.DiGraph, node: str, size_in: int, size_out: int, axis: int) -> Fraction | None:
    """How an op is meant to scale a size on one axis (1/s for a stride, s for a transposed
    conv, the scale of an upsample); None where the spatial axis is lost."""
    data = g.nodes[node]
    op, attrs = data["op"], data["attrs"]
    sp = axis - 2
    if op in WINDOWED:
        return Fraction(1, attrs.stride[sp]) if sp < len(attrs.stride) else Fraction(1)
    if op == "conv_transpose":
        return Fraction(attrs.stride[sp]) if sp < len(attrs.stride) else Fraction(1)
    if op == "upsample":
        if attrs.scale and sp < len(attrs.scale):
            return Fraction(attrs.scale[sp]).limit_denominator(1000)
        if attrs.size_from is not None or size_in == 0:
            return Fraction(size_out, max(size_in, 1))
        ratio = size_out / size_in  # a fixed target size: judge it against the nearest whole scale
        return Fraction(round(ratio)) if ratio >= 1 else Fraction(1, round(1 / ratio))
    if op == "pixel_shuffle":
        return Fraction(attrs.factor or 1)
    if op == "pixel_unshuffle":
        return Fraction(1, attrs.factor or 1)
    if op in GRID_FIXING:
        return Fraction(size_out, max(size_in, 1))
    if op in ("flatten", "reshape", "linear"):
        return None
    if op == "unknown" and size_in != size_out:
        return None
    return Fraction(1)


def steps_along(g: nx.DiGraph, chain: list[str], axis: int) -> tuple[list[Step], Fraction] | None:
    """Ops on a chain whose output departs from nominal scaling, and the chain's final scale."""
    scale = Fraction(1)
    first = _size(g, chain[0], axis)
    if first is None:
        return None
    nominal = Fraction(first)
    steps = []
    for u, v in pairwise(chain):
        size_in, size_out = _size(g, u, axis), _size(g, v, axis)
        if size_in is None or size_out is None:
            return None
        factor = nominal_factor(g, v, size_in, size_out, axis)
        if factor is None or factor == 0:
            return None
        before = scale
        scale *= factor
        in_fork_pixels = Fraction(size_out) / scale
        if in_fork_pixels != nominal:
            steps.append(Step(v, in_fork_pixels - nominal, size_in, size_out, before, factor))
        nominal = in_fork_pixels
    return steps, scale


@dataclass(frozen=True)
class Cause:
    fork: str
    steps: list[Step]  # unexplained departures, earliest first
    scale_ref: Fraction
    scale_other: Fraction
    side: dict[str, str]  # step node -> which operand's branch it is on ("ref"/"other")


def trace_cause(g: nx.DiGraph, d: Disagreement) -> Cause | None:
    """Walk both branches of a disagreement back to their fork and keep the departures that the
    other branch does not share."""
    fork = fork_of(g, d.ref, d.other)
    if fork is None:
        return None
    axis = d.axes[-1] if d.axes[-1] >= 2 else next((a for a in d.axes if a >= 2), None)
    if axis is None:
        return None
    traced = []
    for end in (d.ref, d.other):
        chain = branch(g, fork, end)
        if chain is None:
            return None
        frame = len(output_shape(g, end))
        result = steps_along(g, chain, axis - (len(d.ref_shape) - frame))
        if result is None:
            return None
        traced.append(result)
    (ref_steps, ref_scale), (other_steps, other_scale) = traced
    unmatched_ref = list(ref_steps)
    unmatched_other = []
    for step in other_steps:
        twin = next((s for s in unmatched_ref if s.delta == step.delta), None)
        if twin is not None:
            unmatched_ref.remove(twin)
        else:
            unmatched_other.append(step)
    rank = _rank(g)
    steps = sorted(unmatched_ref + unmatched_other, key=lambda s: rank[s.node])
    side = {s.node: "ref" for s in unmatched_ref} | {s.node: "other" for s in unmatched_other}
    return Cause(fork, steps, ref_scale, other_scale, side)


def merge_mismatch_pass(g: nx.DiGraph) -> None:
    """Write ``size_mismatch``, ``size_mismatch_cause`` and ``breaks_merge`` (module docs)."""
    table = g._node
    for data in table.values():
        data["size_mismatch"] = ()
        data["size_mismatch_cause"] = None
        data["breaks_merge"] = None
    mismatched = []
    for merge in ops_of_kind(g, *MERGES):  # disagreements() is empty for any other op
        shapes = [table[p]["shapes"] for p in table[merge]["inputs"]]
        first = shapes[0][0] if shapes and shapes[0] else None
        if first is not None and all(s and s[0] == first for s in shapes):
            continue  # operands of one known shape: what disagreements() says, without its lists
        found = tuple(disagreements(g, merge))
        if not found:
            continue
        mismatched.append(merge)
        cause = trace_cause(g, found[0])
        g.nodes[merge]["size_mismatch"] = found
        g.nodes[merge]["size_mismatch_cause"] = cause
        if cause and cause.steps and g.nodes[cause.steps[0].node]["breaks_merge"] is None:
            g.nodes[cause.steps[0].node]["breaks_merge"] = merge
    record(g, MISMATCH_INDEX, mismatched)


def mismatched_merges(g: nx.DiGraph) -> list[str]:
    """The merges with a size mismatch, in topological order (running the pass if needed)."""
    return indexed(g, MISMATCH_INDEX, merge_mismatch_pass)


def size_mismatch(g: nx.DiGraph, name: str) -> tuple[tuple[Disagreement, ...], Cause | None]:
    """A node's ``size_mismatch`` and ``size_mismatch_cause`` (running the pass if needed)."""
    node = g._node[name]
    if "size_mismatch" not in node:
        merge_mismatch_pass(g)
    return node["size_mismatch"], node["size_mismatch_cause"]


def breaks_merge(g: nx.DiGraph, name: str) -> str | None:
    """The merge whose size mismatch starts at this node, if any (running the pass if needed)."""
    node = g._node[name]
    if "breaks_merge" not in node:
        merge_mismatch_pass(g)
    return node["breaks_merge"]


def size_sweep(g: nx.DiGraph):
    """The input-size sweep of the sizes pass, or None."""
    sweep = g.graph.get("sizes")
    return sweep if sweep is not None and hasattr(sweep, "spatial") else None
