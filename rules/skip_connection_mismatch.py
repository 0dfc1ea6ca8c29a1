"""
## What it does
Flags a merge (`+`, `-`, `*`, `/`, `torch.cat`) whose inputs disagree on a spatial size (for a
concat: on any axis but the concat axis), including a branch that is silently *broadcast*: a map
that shrank to 1 pixel on an axis through a layer (a strided conv, or a kernel that happens to
cover the whole map at this input size), stretched over a wider one. A size-1 axis that is 1 at
every input size (global or adaptive pooling to 1 as in squeeze-and-excitation and ASPP image
pooling, a view adding the axis, a parameter) is intended broadcasting and is fine: the same
criterion the input-size sweep uses.

The finding names both branches with their sizes and traces the root cause: it walks both
branches back to the op where they forked and names the first op whose output size departs from
what the other branch keeps (a valid-padded conv, a stride-2 layer fed an odd size, a dilation
without matching padding, a transposed conv's output ambiguity), with the input sizes at which
the merge fails and the ones that avoid it.

## Why is this bad?
A merge of maps with different sizes either raises at run time (`torch.cat`: "Sizes of tensors
must match except in dimension 1") at the sizes the author did not try, or, worse, runs: a
1-pixel-wide branch broadcast over a 2-pixel-wide one adds the same value to every column, which
trains without complaint and is wrong.

## Example
```python
self.down = nn.Conv2d(64, 128, 3, stride=2, padding=1)   # 57 -> 29
self.up = nn.ConvTranspose2d(128, 64, 2, stride=2)       # 29 -> 58
...
x = torch.cat([self.up(self.down(skip)), skip], dim=1)   # 58x58 vs 57x57
```

## Use instead
```python
x = torch.cat([self.up(self.down(skip), output_size=skip.shape[2:]), skip], dim=1)
# or x = F.interpolate(x, size=skip.shape[2:]); or the padding that keeps the size
# (padding = dilation * (kernel_size - 1) / 2); or crop the larger map
```
When the cause is one layer's padding (or a transposed conv's output_padding), `archlint --fix
--unsafe-fixes` sets it at that layer's construction call (unsafe: the output size changes).

## References
- PyTorch docs, `torch.cat` and "Broadcasting semantics".
- Ronneberger et al., "U-Net", MICCAI 2015 (cropping the skip to the valid-conv path's size).
- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

import networkx as nx
import numpy as np

from archlint.graph import MERGES, ops, output_shape, spatial
from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule
from archlint_rules._topology import (
    Window,
    decimal,
    fmt_axes,
    fmt_size,
    layer_behind,
    layer_name,
    size_sweep,
    sizes_note,
    windows_of,
)
from archlint_rules.odd_size_stride2 import rounding_at

WINDOWED = ("conv", "max_pool", "avg_pool", "lp_pool")
#: ``--fix --unsafe-fixes`` sets, at the construction call of the layer where the branches
#: diverge, the padding that keeps its size (or the transposed conv's output_padding / padding).
#: Unsafe: that layer's output size changes (which is the point), and with it every later shape.
FIX_APPLICABILITY = Applicability.UNSAFE
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
    node = g.nodes[merge]
    if node["op"] not in MERGES:
        return []
    operands = [p for p in dict.fromkeys(node["inputs"]) if output_shape(g, p) is not None]
    if len(operands) < 2:
        return []
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


def explains_failure(g: nx.DiGraph, name: str) -> bool:
    """True when this rule reports the node (shape-propagation-error defers to it there)."""
    return bool(disagreements(g, name))


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


def root_causes(g: nx.DiGraph) -> dict[str, str]:
    """Root-cause node -> 'merge (file:line)' for every reported disagreement (for AL104)."""
    out: dict[str, str] = {}
    for merge in ops(g):
        for d in disagreements(g, merge):
            cause = trace_cause(g, d)
            if cause and cause.steps:
                origin = g.nodes[merge]["origin"] or g.nodes[merge]["op"]
                out.setdefault(cause.steps[0].node, f"the {origin} at {_where(g, merge)}")
            break
    return out


# ---------------------------------------------------------------------------------------------
# The rule


@rule(
    id="skip-connection-mismatch",
    code="AL101",
    severity="error",
    summary="a merge (add/mul/cat) whose branches disagree on a spatial size",
)
def skip_connection_mismatch(ctx):
    g = ctx.graph
    sweep = size_sweep(g)
    for merge in ctx.nodes(*MERGES):
        found = disagreements(g, merge)
        if not found:
            continue
        d = found[0]
        cause = trace_cause(g, d)
        message = _message(g, merge, found, cause)
        yield ctx.finding(
            merge,
            message,
            fix=_fix(g, d, cause),
            autofix=_autofix(g, d, cause),
            sizes=sizes_note(sweep, *_fires_over_sweep(sweep, found)),
            related=_related(g, d, cause),
        )


def _message(g, merge, found: list[Disagreement], cause: Cause | None) -> str:
    d = found[0]
    node = g.nodes[merge]
    parts = [f"{_branch(g, d.ref)} at {fmt_size(spatial(d.ref_shape))}"] + [
        f"{_branch(g, x.other)} at {fmt_size(spatial(x.other_shape))}" for x in found
    ]
    what = f"{node['origin'] or node['op']} of " + " and ".join(parts)
    if all(x.broadcast for x in found):
        what += (
            ": it runs, but silently broadcasts a 1-pixel axis over the wider map; that axis "
            "is 1 pixel because of the input size (a layer shrank it, not a global pool), so "
            "at larger inputs the merge fails"
        )
    else:
        what += ": the spatial sizes disagree"
    off_axes = [a for a in d.axes if a < 2]
    if off_axes:
        what += f" (and on axis {', '.join(map(str, off_axes))})"
    return what + _cause_text(g, d, cause)


def _cause_text(g, d: Disagreement, cause: Cause | None) -> str:
    if cause is None:
        return ""
    fork = _branch(g, cause.fork)
    if cause.scale_ref != cause.scale_other:
        ratio = cause.scale_other / cause.scale_ref
        return (
            f"; the branches fork at {fork}, and {_label(g, d.other)} ends at {_ratio(ratio)} the "
            f"resolution of {_label(g, d.ref)}{_scale_culprit(g, d, cause)}"
        )
    if not cause.steps:
        return f"; the branches fork at {fork}"
    first = cause.steps[0]
    text = f"; the branches fork at {fork} and first diverge at {layer_name(g, first.node)} ({_where(g, first.node)}): {_step_text(g, first)}"
    more = cause.steps[1:]
    if more:
        text += " (then " + ", ".join(f"{layer_name(g, s.node)}: {s.size_in} -> {s.size_out}" for s in more[:3])
        text += ", ..." if len(more) > 3 else ""
        text += ")"
    return text


def _scale_culprit(g, d, cause) -> str:
    chains = [branch(g, cause.fork, end) or [] for end in (d.ref, d.other)]
    scaling = [n for chain in chains for n in chain[1:] if _scales(g, n)]
    return f"; {layer_name(g, scaling[0])} ({_where(g, scaling[0])}) changes the scale on one branch only" if len(scaling) == 1 else ""


def _scales(g, node) -> bool:
    attrs = g.nodes[node]["attrs"]
    op = g.nodes[node]["op"]
    return (op in (*WINDOWED, "conv_transpose") and any(s != 1 for s in attrs.stride)) or op in (
        "upsample", "pixel_shuffle", "pixel_unshuffle")


def _step_text(g, step: Step) -> str:
    node = g.nodes[step.node]
    rounding = rounding_at(g, step.node)
    change = f"{step.size_in} -> {step.size_out}"
    if rounding is not None:
        return (
            f"caused by {node['origin'] or node['op']} {layer_name(g, step.node)} rounding "
            f"{rounding.describe()} (odd-size-stride2)"
        )
    if node["op"] in WINDOWED:
        return f"{_window_text(node)} turns {change}, not {_nominal(step)}"
    if node["op"] == "conv_transpose":
        return f"the transposed conv gives {change}, not {_nominal(step)} (its output size is ambiguous without output_size/output_padding)"
    if node["op"] == "upsample":
        return f"the resize gives {change}, not {_nominal(step)}"
    return f"{node['origin'] or node['op']} turns {change}, not {_nominal(step)}"




def _nominal(step: Step) -> str:
    return decimal(step.nominal)


# ---------------------------------------------------------------------------------------------
# Fixes


def _fix(g, d: Disagreement, cause: Cause | None) -> str:
    if d.broadcast:
        return (
            f"if {_label(g, _thin(d))} is meant as global context, pool it with "
            "nn.AdaptiveAvgPool2d(1); otherwise resize it to the other branch: "
            "F.interpolate(x, size=skip.shape[2:])"
        )
    axis = next(a for a in d.axes if a >= 2)
    diff = d.other_shape[axis] - d.ref_shape[axis]
    larger, smaller = (d.other, d.ref) if diff > 0 else (d.ref, d.other)
    crop = (
        f"crop {abs(diff)} px from {_label(g, larger)} to match {_label(g, smaller)} "
        f"({abs(diff) // 2} at the start, {abs(diff) - abs(diff) // 2} at the end)"
    )
    resize = f"resize before the merge: F.interpolate(x, size=skip.shape[2:]) with x = {_label(g, larger)}'s output and skip = {_label(g, smaller)}'s"
    if cause is None or cause.scale_ref != cause.scale_other:
        if cause is not None:
            return (
                "bring both branches to the same scale: give the other branch the same stride (e.g. "
                f"a 1x1 conv with that stride on the shortcut), or {resize}"
            )
        return f"{resize}; or {crop}"
    if not cause.steps:
        return f"{resize}; or {crop}"
    first = cause.steps[0]
    specific = _step_fix(g, d, cause, first)
    return f"{specific}; or {crop}" if specific else f"{resize}; or {crop}"


def _autofix(g, d: Disagreement, cause: Cause | None):
    """The edit _step_fix describes, when it is one layer's arguments."""
    if d.broadcast or cause is None or cause.scale_ref != cause.scale_other or not cause.steps:
        return None
    step = cause.steps[0]
    node = g.nodes[step.node]
    if rounding_at(g, step.node) is not None:
        return None
    if node["op"] in WINDOWED:
        wins = windows_of(node["attrs"])
        pads = [_keeping_padding(w) for w in wins]
        if not wins or any(p is None for p in pads):
            return None
        return call_fix(node, {"padding": per_axis(pads)}, FIX_APPLICABILITY,
                        reads=("kernel_size", "stride", "dilation"))
    if node["op"] == "conv_transpose":
        geometry = _transposed_geometry(g, step)
        if geometry is None:
            return None
        return call_fix(node, {k: per_axis(v) for k, v in geometry.items()}, FIX_APPLICABILITY,
                        reads=("kernel_size", "stride", "dilation", "padding", "output_padding"))
    return None


def _thin(d: Disagreement) -> str:
    axis = d.axes[0]
    return d.other if d.other_shape[axis] == 1 else d.ref


def _step_fix(g, d: Disagreement, cause: Cause, step: Step) -> str | None:
    node = g.nodes[step.node]
    on_other = cause.side.get(step.node) == "other"
    skip = d.ref if on_other else d.other
    if rounding_at(g, step.node) is not None:
        chain = branch(g, cause.fork, d.other if on_other else d.ref) or []
        ups = [n for n in chain[chain.index(step.node):] if g.nodes[n]["op"] == "conv_transpose"]
        follow = (
            f"call {layer_name(g, ups[-1])} with output_size=skip.shape[2:] (skip = "
            f"{_label(g, skip)}'s output)"
            if ups
            else f"resize the branch to {_label(g, skip)}: F.interpolate(x, size=skip.shape[2:])"
        )
        stride = _cumulative_stride(g, step.node)
        sizes = f"input sizes divisible by {stride}" if stride else "input sizes the strides divide"
        return f"{follow}, so the decoder follows the skip at every input size; or feed {sizes}"
    if node["op"] in WINDOWED:
        return _padding_fix(g, step)
    if node["op"] == "conv_transpose":
        return _transposed_fix(g, step, skip)
    if node["op"] == "upsample":
        return f"resize to the other branch's size: F.interpolate(x, size=skip.shape[2:]) with skip = {_label(g, skip)}'s output"
    return None


def _cumulative_stride(g, node: str) -> int | None:
    """The effective stride at a node's output (receptive-field facts), when whole and equal."""
    rf = g.nodes[node].get("rf")
    strides = {Fraction(axis.stride) for axis in rf or () if axis is not None}
    if len(strides) != 1:
        return None
    stride = strides.pop()
    return int(stride) if stride.denominator == 1 and stride > 1 else None


def _padding_fix(g, step: Step) -> str | None:
    wins = windows_of(g.nodes[step.node]["attrs"])
    if not wins:
        return None
    pads = [_keeping_padding(w) for w in wins]
    name = layer_name(g, step.node)
    if any(p is None for p in pads):
        return (
            f"{name}'s window span is even, so no symmetric padding keeps the size: use an odd "
            "kernel, or pad one more pixel at the end with F.pad before it"
        )
    text = f"give {name} padding={fmt_axes(pads)}"
    if any(w.dilation > 1 for w in wins):
        return text + " (dilation * (kernel_size - 1) / 2) so it keeps the size"
    if any(w.stride > 1 for w in wins):
        return text + " so its output is exactly input / stride"
    return text + " so it keeps the size"


def _keeping_padding(w: Window) -> int | None:
    """The symmetric padding giving n/s (n for stride 1) whenever s divides n."""
    low = max(0, -(-(w.extent - w.stride) // 2))
    return low if 2 * low <= w.extent - 1 else None


def _transposed_geometry(g, step: Step) -> dict[str, list[int]] | None:
    """The transposed conv's arguments that give the nominal size: output_padding alone when
    that is legal, else padding and output_padding for exactly input x stride."""
    attrs = g.nodes[step.node]["attrs"]
    wins = windows_of(attrs)
    if not wins:
        return None
    current = list(attrs.output_padding or (0,) * len(wins))
    change = step.nominal - step.size_out
    if change.denominator == 1:
        wanted = [op + int(change) for op in current]
        if all(0 <= op < max(w.stride, w.dilation) for op, w in zip(wanted, wins)):
            return {"output_padding": wanted}
    pads = [max(0, -(-(w.extent - w.stride) // 2)) for w in wins]
    extra = [2 * p - (w.extent - w.stride) for p, w in zip(pads, wins)]
    if all(0 <= e < max(w.stride, w.dilation) for e, w in zip(extra, wins)):
        return {"padding": pads, "output_padding": extra}
    return None


def _transposed_fix(g, step: Step, skip: str) -> str:
    name = layer_name(g, step.node)
    follow = f"call {name} with output_size=skip.shape[2:] (skip = {_label(g, skip)}'s output)"
    geometry = _transposed_geometry(g, step)
    if geometry is None:
        return follow
    if "padding" not in geometry:
        return f"{follow}, or construct it with output_padding={fmt_axes(geometry['output_padding'])}"
    return (
        f"construct {name} with padding={fmt_axes(geometry['padding'])}, "
        f"output_padding={fmt_axes(geometry['output_padding'])} so it gives exactly input x stride; "
        f"or {follow}"
    )


# ---------------------------------------------------------------------------------------------
# Sizes, names, formatting


def _fires_over_sweep(sweep, found: list[Disagreement]):
    """(fires, defined) over the swept sizes: where some disagreeing pair differs on a spatial
    axis, and where every operand involved exists (so the merge is judged at all)."""
    if sweep is None:
        return None, None
    fires = defined = None
    for d in found:
        try:
            ref, other = sweep.spatial(d.ref), sweep.spatial(d.other)
        except (KeyError, ValueError):
            return None, None
        if ref is None or other is None or len(ref) != len(other):
            return None, None
        here = np.all([np.asarray(a) > 0 for a in (*ref, *other)], axis=0)
        defined = here if defined is None else defined & here
        for a, b in zip(ref, other):
            differ = np.asarray(a) != np.asarray(b)
            fires = differ if fires is None else fires | differ
    if fires is None:
        return None, None
    return fires & defined, defined


def _related(g, d: Disagreement, cause: Cause | None) -> list:
    places = []
    if cause is not None and cause.steps:
        places += [g.nodes[s.node]["location"] for s in cause.steps[:3]]
    places += [g.nodes[layer_behind(g, d.ref)]["location"], g.nodes[layer_behind(g, d.other)]["location"]]
    unique = []
    for p in places:
        if p not in unique:
            unique.append(p)
    return unique


def _label(g, node: str) -> str:
    return layer_name(g, layer_behind(g, node))


def _branch(g, node: str) -> str:
    """'enc2 (line 15)': a branch named by its layer and where that layer is built."""
    layer = layer_behind(g, node)
    return f"{layer_name(g, layer)} ({_where(g, layer)})"


def _where(g, node: str) -> str:
    """'line 25' (the model file is the finding's file), or file:line for another file."""
    location = g.nodes[node]["location"]
    if location.line is None:
        return "ONNX node" if g.graph.get("frontend") == "onnx" else (location.node or node)
    if location.file is not None and location.file != g.graph.get("target"):
        return f"{location.file}:{location.line}"
    return f"line {location.line}"


def _ratio(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _window_text(node) -> str:
    """'nn.Conv2d (kernel 3x3, dilation 2x2, padding 1)' for messages."""
    wins = windows_of(node["attrs"])
    if not wins:
        return node["origin"] or node["op"]
    parts = [f"kernel {'x'.join(str(w.kernel) for w in wins)}"]
    if any(w.stride != 1 for w in wins):
        parts.append(f"stride {'x'.join(str(w.stride) for w in wins)}")
    if any(w.dilation != 1 for w in wins):
        parts.append(f"dilation {'x'.join(str(w.dilation) for w in wins)}")
    if all(w.pad_begin == w.pad_end for w in wins):
        parts.append(f"padding {fmt_axes([w.pad_begin for w in wins])}")
    else:
        parts.append(f"padding {[(w.pad_begin, w.pad_end) for w in wins]}")
    return f"{node['origin'] or node['op']} ({', '.join(parts)})"
