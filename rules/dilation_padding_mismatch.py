"""
## What it does
Flags a stride-1 dilated convolution whose padding is not `dilation * (kernel_size - 1) / 2`
while the layers around it keep the map's size (it sits among size-keeping convs, or its output
is merged with a branch of the size it was given).

## Why is this bad?
A dilated kernel spans `dilation * (kernel_size - 1) + 1` pixels, so the padding that keeps the
size grows with the dilation. Copying `padding=1` from the 3x3 convs next to it makes a
`dilation=2` conv shrink the map by 2 per axis (by `2 * (dilation - 1)` in general). The network
still runs, but every later size is off, border pixels are lost, and a later merge either fails
or needs a crop nobody intended.

## Example
```python
self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
self.conv3 = nn.Conv2d(64, 64, 3, padding=1, dilation=2)   # 64x64 -> 62x62
```

## Use instead
```python
self.conv3 = nn.Conv2d(64, 64, 3, padding=2, dilation=2)   # padding = dilation * (k - 1) / 2
```
`archlint --fix --unsafe-fixes` makes this edit when dilation * (k - 1) is even (unsafe: the
output size changes).

## References
- Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR 2016.
- PyTorch docs, `nn.Conv2d`: output size formula with `dilation`.
"""

from __future__ import annotations

from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule
from archlint_rules._topology import (
    fmt_axes,
    fmt_size,
    kernel_extent,
    layer_name,
    merge_name,
    merge_partners_at_size,
    neighbours_keep_size,
    spatial_in,
    spatial_out,
    windows,
)


#: ``--fix --unsafe-fixes`` sets padding = dilation * (kernel_size - 1) / 2 at the conv's
#: construction call. Unsafe: the output size changes (to the size its neighbours keep).
FIX_APPLICABILITY = Applicability.UNSAFE


@rule(
    id="dilation-padding-mismatch",
    code="AL201",
    severity="warning",
    summary="dilated stride-1 conv whose padding does not keep the size its neighbours keep",
)
def dilation_padding_mismatch(ctx):
    g = ctx.graph
    for name in ctx.nodes_where(_dilated_and_shrinking, "conv"):
        axes = windows(ctx.node(name)["attrs"])
        shrink = [kernel_extent(k, d) - 1 - pb - pe for k, _, d, (pb, pe) in axes]
        size_in, size_out = spatial_in(g, name), spatial_out(g, name)
        if size_in is None:
            continue
        keepers = neighbours_keep_size(g, name)
        merges = merge_partners_at_size(g, name, size_in)
        if not keepers and not merges:
            continue

        kernel = fmt_size([k for k, *_ in axes])
        dilation = fmt_axes([d for _, _, d, _ in axes])
        padding = fmt_axes([pb for *_, (pb, _) in axes]) if all(
            pb == pe for *_, (pb, pe) in axes
        ) else str([p for *_, p in axes])
        change = f"{fmt_size(size_in)} -> {fmt_size(size_out)}" if size_out else "to nothing"
        why = (
            f"while its neighbours ({', '.join(layer_name(g, n) for n in keepers)}) keep the size"
            if keepers
            else f"while the branch it is merged with at {merge_name(g, merges[0])} "
            f"is {fmt_size(size_in)}"
        )
        per_axis = f"{fmt_axes(shrink)} pixels"
        message = (
            f"{kernel} conv with dilation {dilation} and padding {padding} shrinks the map by "
            f"{per_axis} per axis ({change}) {why}"
        )
        yield ctx.finding(
            name,
            message,
            fix=_fix(axes),
            autofix=_autofix(ctx.node(name), axes),
            related=[g.nodes[n]["location"] for n in (*keepers, *merges)],
        )


def _dilated_and_shrinking(attrs) -> bool:
    """A dilated stride-1 conv with explicit padding that does not keep the size."""
    axes = windows(attrs)
    if not axes or attrs.auto_pad:
        return False
    if any(s != 1 for _, s, _, _ in axes) or all(d == 1 for _, _, d, _ in axes):
        return False
    return any(kernel_extent(k, d) - 1 - pb - pe != 0 for k, _, d, (pb, pe) in axes)


def _autofix(node, axes):
    totals = [kernel_extent(k, d) - 1 for k, _, d, _ in axes]
    if any(t % 2 for t in totals):
        return None  # no symmetric padding keeps the size: a choice for the author
    return call_fix(node, {"padding": per_axis([t // 2 for t in totals])}, FIX_APPLICABILITY,
                    reads=("kernel_size", "dilation"))


def _fix(axes) -> str:
    """padding = dilation * (k - 1) / 2 when that is whole; else an asymmetric pad."""
    totals = [kernel_extent(k, d) - 1 for k, _, d, _ in axes]
    if all(t % 2 == 0 for t in totals):
        pads = fmt_axes([t // 2 for t in totals])
        return f"use padding={pads} (dilation * (kernel_size - 1) / 2) to keep the size"
    # Even span: no symmetric padding keeps the size; pad one more pixel at the end.
    pad_pairs = []
    for total in reversed(totals):  # F.pad lists the last axis first
        pad_pairs += [total // 2, total - total // 2]
    return (
        "no symmetric padding keeps the size with this even span: use an odd kernel, or "
        f"padding=0 after F.pad(x, {tuple(pad_pairs)}), or padding='same'"
    )
