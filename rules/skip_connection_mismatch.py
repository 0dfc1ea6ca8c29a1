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

from fractions import Fraction

import numpy as np

from archlint.fixes import Applicability, call_fix, per_axis
from archlint.graph import spatial
from archlint.passes.merge_mismatch import (
    WINDOWED,
    Cause,
    Disagreement,
    Step,
    branch,
    mismatched_merges,
    size_mismatch,
)
from archlint.passes.strided_rounding import rounding_at
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
    where,
    windows_of,
)

#: ``--fix --unsafe-fixes`` sets, at the construction call of the layer where the branches
#: diverge, the padding that keeps its size (or the transposed conv's output_padding / padding).
#: Unsafe: that layer's output size changes (which is the point), and with it every later shape.
FIX_APPLICABILITY = Applicability.UNSAFE


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
    for merge in mismatched_merges(g) if g is not None else ():
        found, cause = size_mismatch(g, merge)
        d = found[0]
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
    text = f"; the branches fork at {fork} and first diverge at {layer_name(g, first.node)} ({where(g, first.node)}): {_step_text(g, first)}"
    more = cause.steps[1:]
    if more:
        text += " (then " + ", ".join(f"{layer_name(g, s.node)}: {s.size_in} -> {s.size_out}" for s in more[:3])
        text += ", ..." if len(more) > 3 else ""
        text += ")"
    return text


def _scale_culprit(g, d, cause) -> str:
    chains = [branch(g, cause.fork, end) or [] for end in (d.ref, d.other)]
    scaling = [n for chain in chains for n in chain[1:] if _scales(g, n)]
    return f"; {layer_name(g, scaling[0])} ({where(g, scaling[0])}) changes the scale on one branch only" if len(scaling) == 1 else ""


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
    return f"{layer_name(g, layer)} ({where(g, layer)})"


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
