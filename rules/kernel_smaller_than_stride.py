"""
## What it does
Flags a convolution or pooling layer whose window leaves input pixels unread: its kernel extent
(`dilation * (kernel_size - 1) + 1`) is smaller than its stride, or its dilated taps skip whole
rows of every stride period. A 1x1 strided conv that is one branch of a residual block (ResNet's
projection shortcut, or the first conv of a ResNet v1 bottleneck) is reported at info level
only: it is a known, deliberate design, and the finding says whether the other branch reads the
skipped pixels.

## Why is this bad?
A `kernel_size=1, stride=2` layer reads one pixel in four and throws the other three away; the
signal it passes on is aliased, and features that fall between the sampled pixels never reach the
next layer. It is rarely what the author meant when choosing "downsample by 2".

## Example
```python
self.down = nn.Conv2d(64, 128, kernel_size=1, stride=2)   # reads 25% of the pixels
```

## Use instead
```python
self.down = nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1)
# or, keeping a 1x1 projection, pool first (ResNet-D):
self.down = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(64, 128, kernel_size=1))
```
`archlint --fix --unsafe-fixes` makes the first edit (unsafe: the weights change shape); for a
pool, it sets kernel_size to the stride.

## References
- He et al., "Bag of Tricks for Image Classification with Convolutional Neural Networks", 2019
  (ResNet-D: the 1x1 stride-2 shortcut ignores three quarters of the input).
- Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019.
"""

from __future__ import annotations

from fractions import Fraction

import networkx as nx

from archlint.graph import ELEMENTWISE_MERGES
from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule
from archlint_rules._topology import (
    fmt_axes,
    fmt_size,
    layer_name,
    read_fraction,
    spatial_out,
    windows,
)

WINDOW_OPS = ("conv", "max_pool", "avg_pool", "lp_pool")
#: ``--fix --unsafe-fixes`` sets a kernel that covers the stride at the layer's construction call
#: (a conv: kernel_size = stride + 1 for an even stride, with the padding that keeps the output
#: size; a pool: kernel_size = stride). Unsafe: the weights change shape, a pool's output may lose
#: a row at odd sizes.
FIX_APPLICABILITY = Applicability.UNSAFE


def _skips_pixels(attrs) -> bool:
    """A strided window whose taps miss some of the stride's residues on some axis."""
    axes = windows(attrs)
    if not axes or all(s == 1 for _, s, _, _ in axes):
        return False
    return any(read_fraction(k, s, d) != 1 for k, s, d, _ in axes)


@rule(
    id="kernel-smaller-than-stride",
    code="AL203",
    severity="warning",
    summary="strided conv/pool whose window never reads some input pixels",
)
def kernel_smaller_than_stride(ctx):
    g = ctx.graph
    for name in ctx.nodes_where(_skips_pixels, *WINDOW_OPS):
        axes = windows(ctx.node(name)["attrs"])
        read = [read_fraction(k, s, d) for k, s, d, _ in axes]
        skipped = 1 - _product(read)
        kernel = fmt_size([k for k, *_ in axes])
        stride = fmt_axes([s for _, s, _, _ in axes])
        dilation = [d for _, _, d, _ in axes]
        dilated = "" if all(d == 1 for d in dilation) else f", dilation {fmt_axes(dilation)}"
        per_axis = " and ".join(
            f"{f.numerator} of every {f.denominator} {axis}"
            for f, axis in zip(read, _axis_names(len(read)))
            if f != 1
        )
        op = ctx.node(name)["op"].replace("_", " ")
        message = (
            f"{kernel} {op} with stride {stride}{dilated} reads only {per_axis}: "
            f"{_percent(skipped)} of the input pixels never reach the output"
        )
        residual = _residual_block_of(g, name)
        if residual is None:
            sibling = _sibling_reader(g, name)
            if sibling is not None:
                yield ctx.finding(
                    name,
                    f"{message} on this branch, but another branch merged with it reads them "
                    f"({layer_name(g, sibling)})",
                    fix="if it matters, pool before it: "
                    f"nn.AvgPool2d({stride}), then a stride-1 layer",
                    severity="info",
                    related=[g.nodes[sibling]["location"]],
                )
                continue
        if residual is not None:
            reader = _full_reader(g, residual)
            beside = (
                f"the other branch reads them ({layer_name(g, reader)})"
                if reader is not None
                else "no branch of the block reads them (ResNet v1 downsampling; v1.5 puts "
                "the stride on the 3x3 conv instead)"
            )
            yield ctx.finding(
                name,
                f"{message}; it is a branch of a residual block, and {beside}",
                fix="if it matters, pool before the 1x1 conv (ResNet-D): "
                f"nn.AvgPool2d({stride}), then a stride-1 1x1 conv"
                + ("" if reader is not None else "; or move the stride to the 3x3 conv"),
                severity="info",
                related=[g.nodes[residual[1]]["location"]],
            )
            continue
        strides = [s for _, s, _, _ in axes]
        yield ctx.finding(name, message, fix=_fix(ctx.node(name)["op"], strides),
                          autofix=_autofix(ctx.node(name), axes))


def _residual_block_of(g, name: str) -> tuple[str, str, str] | None:
    """(fork, add, other operand) when the 1x1 conv ``name`` is one branch of a residual block:
    its output reaches an elementwise add whose other operand comes from the same input
    (``fork``) by a path that avoids ``name`` (a projection shortcut, or ResNet v1's main
    branch)."""
    node = g.nodes[name]
    if node["op"] != "conv" or any(k != 1 for k in node["attrs"].kernel) or not node["inputs"]:
        return None
    fork = node["inputs"][0]
    after = nx.descendants(g, name)
    for add in (m for m in after if g.nodes[m]["op"] in ELEMENTWISE_MERGES):
        operands = g.nodes[add]["inputs"]
        for other in operands:
            if other == name or other in after:
                continue
            if other == fork or fork in nx.ancestors(g, other):
                if spatial_out(g, other) == spatial_out(g, add):
                    return fork, add, other
    return None


def _sibling_reader(g, name: str) -> str | None:
    """A layer on another branch from the same input that reads every pixel, whose output meets
    this one's downstream (a pre-activation shortcut, a ``torch.stack(...).sum(0)`` merge)."""
    node = g.nodes[name]
    if not node["inputs"]:
        return None
    fork = node["inputs"][0]
    after = nx.descendants(g, name)
    if not after:
        return None
    # the fork itself, and what it was computed from through size-keeping ops (pre-activation)
    sources = {fork}
    current = fork
    while g.nodes[current]["op"] in ("pointwise", "norm") and g.nodes[current]["inputs"]:
        current = g.nodes[current]["inputs"][0]
        sources.add(current)
    for candidate in sorted(set().union(*(nx.descendants(g, s) for s in sources)) - after - {name},
                            key=list(g.nodes).index):
        if g.nodes[candidate]["op"] not in WINDOW_OPS:
            continue
        axes = windows(g.nodes[candidate]["attrs"])
        if not axes or any(read_fraction(k, s, d) != 1 for k, s, d, _ in axes):
            continue
        if spatial_out(g, candidate) is None or g.nodes[candidate]["inputs"][0] not in (
                sources | nx.descendants(g, fork)):
            continue
        meet = after & nx.descendants(g, candidate)
        if meet and _sums(g, min(meet, key=list(g.nodes).index)):
            return candidate
    return None


def _sums(g, node: str) -> bool:
    """The branches meet in a sum (``a + b``, or ``torch.stack([a, b]).sum(0)``): every pixel one
    of them reads reaches each output value. A concat keeps the branches' channels apart."""
    data = g.nodes[node]
    if data["op"] in ELEMENTWISE_MERGES:
        return True
    if data["op"] == "unknown" and data["origin"].endswith("stack"):
        return any(g.nodes[c]["op"] == "reduce" for c in g.successors(node))
    return False


def _full_reader(g, residual: tuple[str, str, str]) -> str | None:
    """On the other branch (fork -> other operand), a strided window that reads every pixel."""
    fork, _, other = residual
    branch = (nx.ancestors(g, other) | {other}) - nx.ancestors(g, fork) - {fork}
    for node in sorted(branch, key=list(g.nodes).index):
        if g.nodes[node]["op"] not in WINDOW_OPS:
            continue
        axes = windows(g.nodes[node]["attrs"])
        strided = any(s > 1 for _, s, _, _ in axes)
        if strided and all(read_fraction(k, s, d) == 1 for k, s, d, _ in axes):
            return node
    return None


def _autofix(node, axes):
    strides = [s for _, s, _, _ in axes]
    if node["op"] != "conv":
        return call_fix(node, {"kernel_size": per_axis(strides)}, FIX_APPLICABILITY,
                        reads=("stride",))
    kernel, padding = _covering_kernel(strides)
    arguments = {"kernel_size": per_axis(kernel), "padding": per_axis(padding)}
    if any(d != 1 for _, _, d, _ in axes):
        arguments["dilation"] = 1  # the kernel is sized for adjacent taps
    return call_fix(node, arguments, FIX_APPLICABILITY, reads=("stride",))


def _covering_kernel(strides: list[int]) -> tuple[list[int], list[int]]:
    """The smallest odd kernel >= stride, and the padding that keeps a 1x1 conv's output size."""
    kernel = [s + 1 if s % 2 == 0 else s for s in strides]
    padding = [(s + 1) // 2 if s % 2 == 0 else (s - 1) // 2 for s in strides]
    return kernel, padding


def _fix(op: str, strides: list[int]) -> str:
    stride = fmt_axes(strides)
    if op == "conv":
        kernel_axes, padding_axes = _covering_kernel(strides)
        kernel, padding = fmt_axes(kernel_axes), fmt_axes(padding_axes)
        return (
            f"use kernel_size >= stride, e.g. kernel_size={kernel}, stride={stride}, "
            f"padding={padding}; or pool first (nn.AvgPool2d({stride})) and use a stride-1 conv"
        )
    return f"use kernel_size >= stride (kernel_size={stride}, stride={stride} reads each pixel once)"


def _axis_names(count: int) -> list[str]:
    names = {1: ["samples"], 2: ["rows", "columns"], 3: ["slices", "rows", "columns"]}
    return names.get(count, [f"axis-{i} positions" for i in range(count)])


def _product(values) -> Fraction:
    out = Fraction(1)
    for v in values:
        out *= v
    return out


def _percent(value: Fraction) -> str:
    return f"{float(value) * 100:.0f}%"
