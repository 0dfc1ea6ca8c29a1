"""
## What it does
Reports a convolution or pooling layer whose window is larger than its (padded) input at the
example size, so the map would shrink to nothing there, with the smallest input size the model
accepts.

## Why is this bad?
Each stride-2 stage halves the map; after enough of them a 3x3 (or 7x7) window no longer fits and
PyTorch raises ("Kernel size can't be greater than actual input size", "Output size is too
small"). The model was designed for larger inputs than it is being given, or has one stage too
many for this resolution.

## Example
```python
# 32x32 input: five 2x2 pools leave 1x1, then
self.head = nn.Conv2d(512, 512, 3)          # 3x3 window on a 1x1 map
```

## Use instead
Feed at least the smallest input the model accepts (the finding gives it), drop a downsampling
stage, or pad the layer (`padding=1`) so the window fits.

## References
- PyTorch docs, `nn.Conv2d` / `nn.MaxPool2d`: output size `floor((H + 2p - d(k-1) - 1)/s) + 1`
  must be at least 1.
"""

from __future__ import annotations

import numpy as np

from archlint.passes.collapse import COLLAPSING_OPS, collapsed_axes, collapsed_nodes  # noqa: F401  (tests)
from archlint.rule import rule
from archlint_rules._topology import (
    fmt_size,
    kernel_extent,
    size_sweep,
    sizes_note,
    spatial_in,
    windows,
)

@rule(
    id="spatial-collapse",
    code="AL204",
    severity="error",
    summary="a window larger than its padded input: the map shrinks to nothing",
)
def spatial_collapse(ctx):
    g = ctx.graph
    for name in collapsed_nodes(g) if g is not None else ():  # the windows that collapse
        node = ctx.node(name)
        size_in = spatial_in(g, name)
        attrs = node["attrs"]
        padded = [
            n + pb + pe for n, (pb, pe) in zip(size_in, attrs.padding or ((0, 0),) * len(size_in))
        ]
        extents = [kernel_extent(k, d) for k, _, d, _ in windows(attrs)]
        op = node["op"].replace("_", " ")
        if node["op"] == "conv_transpose":
            message = (
                f"{fmt_size(attrs.kernel)} {op} on a {fmt_size(size_in)} map gives an empty output"
            )
        else:
            message = (
                f"{fmt_size(extents)} {op} window on a {fmt_size(size_in)} map "
                f"({fmt_size(padded)} padded): the map has shrunk to nothing at the example input"
            )
        smallest, sizes = _smallest_inputs(g, name)
        if smallest is not None:
            fix = (
                f"feed at least {smallest}x{smallest} (the smallest square input this model "
                "accepts), or remove a downsampling stage before this layer"
            )
        else:
            fix = "feed a larger input, remove a downsampling stage before this layer, or pad it"
        yield ctx.finding(name, message, fix=fix, sizes=sizes)


def _smallest_inputs(g, name: str) -> tuple[int | None, str | None]:
    """The smallest square side the whole model accepts (for the fix), and where this layer
    collapses over the sweep and where it does not, among the sides that reach it."""
    sweep = size_sweep(g)
    if sweep is None:
        return None, None
    arrays = sweep.spatial(g.nodes[name]["inputs"][0])
    if arrays is None:
        return sweep.smallest(), None
    reached = np.all([np.asarray(a) > 0 for a in arrays], axis=0)
    collapses = np.asarray(sweep.invalid_at(name), dtype=bool) & reached
    return sweep.smallest(), sizes_note(sweep, collapses, reached)
