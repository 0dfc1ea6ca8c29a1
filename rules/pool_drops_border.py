"""
## What it does
Counts the trailing rows and columns of its input that a floor-mode pooling layer never visits at
the example size: when `(H + padding - kernel_size)` is not a multiple of the stride, the last
window stops short of the edge and the pixels after it are dropped.

Sizes the stride does not divide (a 2x2 pool on 7x7) are left to `odd-size-stride2`, which
reports that rounding; this rule covers the windows that miss the border even on a divisible
size (a 3x3 stride-2 pool on 64x64).

## Why is this bad?
Usually harmless, which is why this is info: one row of a 64x64 map lost to `MaxPool2d(3, stride=2)`
is 1/64 of the map. But it is silent, it repeats at every pooling stage, and it makes the
model see the bottom/right border less than the top/left one.

## Example
```python
self.pool = nn.MaxPool2d(3, stride=2)   # on 64x64: the last row and column are never pooled
```

## Use instead
```python
self.pool = nn.MaxPool2d(3, stride=2, padding=1)     # windows reach both edges
self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
# or choose an input size at which the windows tile the map
```
`archlint --fix --unsafe-fixes` makes the `ceil_mode=True` edit (unsafe: the output grows by one
row and column at this size).

## References
- PyTorch docs, `nn.MaxPool2d`: output size with `ceil_mode=False` rounds down.
"""

from __future__ import annotations

from archlint.fixes import Applicability, call_fix
from archlint.rule import rule
import numpy as np

from archlint_rules._topology import (
    fmt_axes,
    fmt_size,
    kernel_extent,
    plural,
    read_fraction,
    size_sweep,
    spatial_in,
    windows,
)

POOLS = ("max_pool", "avg_pool", "lp_pool")


def dropped_trailing(
    n: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int
) -> int:
    """Real (non-padding) trailing pixels a floor-mode window never reaches on one axis."""
    padded = n + pad_begin + pad_end
    extent = kernel_extent(kernel, dilation)
    if padded < extent:
        return 0
    left_over = (padded - extent) % stride
    return max(0, left_over - pad_end)


#: ``--fix --unsafe-fixes`` passes ceil_mode=True at the pool's construction call, so a last,
#: partial window reaches the edge. Unsafe: the output grows by one on those axes.
FIX_APPLICABILITY = Applicability.UNSAFE


@rule(
    id="pool-drops-border",
    code="AL206",
    severity="info",
    summary="floor-mode pooling never visits the last rows/columns at the example size",
)
def pool_drops_border(ctx):
    g = ctx.graph
    for name in ctx.nodes(*POOLS):
        attrs = ctx.node(name)["attrs"]
        axes = windows(attrs)
        size_in = spatial_in(g, name)
        if not axes or attrs.ceil_mode or size_in is None or len(size_in) != len(axes):
            continue
        dropped = [
            dropped_trailing(n, k, s, d, pb, pe) for n, (k, s, d, (pb, pe)) in zip(size_in, axes)
        ]
        if not any(dropped) or any(read_fraction(k, s, d) < 1 for k, s, d, _ in axes):
            continue  # a window that skips pixels everywhere is kernel-smaller-than-stride
        if any(c and n % s for c, n, (_, s, _, _) in zip(dropped, size_in, axes)):
            continue  # rounding on a size the stride does not divide is odd-size-stride2's
        names = ["row", "column"] if len(dropped) == 2 else [
            f"axis-{i} position" for i in range(len(dropped))
        ]
        lost = " and ".join(
            f"the last {axis}" if c == 1 else f"the last {plural(c, axis)}"
            for c, axis in zip(dropped, names)
            if c
        )
        stride = fmt_axes([s for _, s, _, _ in axes])
        kernel = fmt_size([k for k, *_ in axes])
        yield ctx.finding(
            name,
            f"{kernel} {ctx.node(name)['op'].replace('_', ' ')} with stride {stride} on a "
            f"{fmt_size(size_in)} map never visits {lost}",
            fix="use ceil_mode=True, or padding so the windows reach the edge, or an input size at "
            "which the windows tile the map",
            sizes=_sizes(g, name, axes),
            autofix=call_fix(ctx.node(name), {"ceil_mode": True}, FIX_APPLICABILITY),
        )


def _sizes(g, name: str, axes) -> str | None:
    """Over the square sweep: the input sides at which the windows tile the map exactly."""
    sweep = size_sweep(g)
    source = g.nodes[name]["inputs"][0]
    maps = sweep.spatial(source) if sweep is not None else None
    if maps is None or len(maps) != len(axes):
        return None
    drops = np.zeros(len(sweep.sizes), dtype=bool)
    defined = np.ones(len(sweep.sizes), dtype=bool)
    for n, (k, s, d, (pb, pe)) in zip(maps, axes):
        n = np.asarray(n, dtype=np.int64)
        padded = n + pb + pe
        extent = kernel_extent(k, d)
        left_over = np.where(padded >= extent, (padded - extent) % s, 0)
        drops |= (n > 0) & (left_over - pe > 0)
        defined &= n > 0
    # where this pool's input exists and it drops nothing (not where the whole model runs)
    tiles = defined & ~drops
    if hasattr(sweep, "invalid_at"):
        tiles &= ~np.asarray(sweep.invalid_at(name), dtype=bool)  # the window must fit at all
    if not tiles.any():
        return None
    return f"every row and column is pooled at input sides {sweep.describe(tiles)}"
