"""
## What it does
Flags a strided transposed convolution whose output is merged with a skip connection that it
misses by less than its stride, because it was given neither `output_padding` nor an
`output_size`. A stride-2 convolution maps both 2n and 2n + 1 to n, so its transposed twin cannot
know which one to give back: it returns the smaller, and an odd-sized skip no longer fits.

## Why is this bad?
The decoder works at the sizes the author tried and fails (or needs a crop) at the others: a
U-Net fed 250x250 has a 125x125 skip, and upsampling 62x62 gives 124x124. The fix is one
argument at the transposed conv, not a crop at the merge.

## Example
```python
up = self.up(x)                       # nn.ConvTranspose2d(128, 64, 2, stride=2): 62 -> 124
x = torch.cat([up, skip], dim=1)      # skip is 125x125
```

## Use instead
```python
up = self.up(x, output_size=skip.shape[2:])   # works at every input size
# or, for one fixed size: nn.ConvTranspose2d(128, 64, 2, stride=2, output_padding=1)
```
`archlint --fix --unsafe-fixes` makes the second edit, at the construction call (unsafe: right
for the example size only).

## References
- PyTorch docs, `nn.ConvTranspose2d`: the note on `output_padding` and the `output_size`
  argument of `forward`.
- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, section 4.6.
"""

from __future__ import annotations

import numpy as np

from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule
from archlint_rules._topology import (
    fmt_axes,
    fmt_size,
    layer_name,
    merge_name,
    merges_fed,
    other_branches,
    producer_name,
    size_sweep,
    spatial_out,
    windows,
)


def missing_output_padding(size_out, size_skip, strides, dilations) -> list[int] | None:
    """Per-axis output_padding that would make the output match the skip, when each gap is one
    output_padding can close (0 <= gap < max(stride, dilation)) and some gap is positive."""
    gaps = [skip - out for out, skip in zip(size_out, size_skip)]
    if not any(gaps):
        return None
    if all(0 <= gap < max(s, d) for gap, s, d in zip(gaps, strides, dilations)):
        return gaps
    return None


#: ``--fix --unsafe-fixes`` sets output_padding at the transposed conv's construction call.
#: Unsafe: it changes the output size, and is right for the example's size only (output_size at
#: the call follows every size, but is an edit to forward that archlint does not make).
FIX_APPLICABILITY = Applicability.UNSAFE


@rule(
    id="transposed-conv-output-ambiguity",
    code="AL208",
    severity="warning",
    summary="strided transposed conv misses its skip's odd size (no output_size/output_padding)",
)
def transposed_conv_output_ambiguity(ctx):
    g = ctx.graph
    for name in ctx.nodes("conv_transpose"):
        attrs = ctx.node(name)["attrs"]
        axes = windows(attrs)
        if not axes or all(s == 1 for _, s, _, _ in axes):
            continue
        if any(attrs.output_padding) or attrs.extra.get("output_shape") is not None:
            continue
        size_out = spatial_out(g, name)
        if size_out is None:
            continue
        strides = [s for _, s, _, _ in axes]
        dilations = [d for _, _, d, _ in axes]
        for merge, feeder in merges_fed(g, name):
            for skip in other_branches(g, merge, feeder):
                size_skip = spatial_out(g, skip)
                if size_skip is None or len(size_skip) != len(size_out):
                    continue
                pads = missing_output_padding(size_out, size_skip, strides, dilations)
                if pads is None:
                    continue
                yield ctx.finding(
                    name,
                    f"stride-{fmt_axes(strides)} transposed conv gives {fmt_size(size_out)}, but "
                    f"the skip from {producer_name(g, skip)} it is merged with at "
                    f"{merge_name(g, merge)} is "
                    f"{fmt_size(size_skip)}: a stride-{fmt_axes(strides)} conv maps "
                    "several sizes to one, and without output_padding the smallest comes back",
                    fix=_fix(g, name, pads),
                    autofix=call_fix(g.nodes[name], {"output_padding": per_axis(pads)},
                                     FIX_APPLICABILITY, reads=("stride", "dilation")),
                    related=[g.nodes[merge]["location"], g.nodes[skip]["location"]],
                    sizes=_sizes(g, name, skip, strides, dilations),
                )
                break
            else:
                continue
            break


def _sizes(g, name: str, skip: str, strides, dilations) -> str | None:
    """Over the square sweep: the input sides at which the output misses the skip this way."""
    sweep = size_sweep(g)
    outs = sweep.spatial(name) if sweep is not None else None
    skips = sweep.spatial(skip) if sweep is not None else None
    if outs is None or skips is None or len(outs) != len(skips):
        return None
    misses = np.zeros(len(sweep.sizes), dtype=bool)
    for out, size, s, d in zip(outs, skips, strides, dilations):
        gap = np.asarray(size) - np.asarray(out)
        misses |= (np.asarray(out) > 0) & (gap > 0) & (gap < max(s, d))
    if not misses.any():
        return None
    return f"misses the skip at input sides {sweep.describe(misses)}"


def _fix(g, name: str, pads: list[int]) -> str:
    fixed = f"output_padding={fmt_axes(pads)} (right for this input size only)"
    if g.graph.get("frontend") != "torch":
        return f"set {fixed}, or size the output from the skip"
    return (
        f"where {layer_name(g, name)} is called, pass output_size=skip.shape[2:] "
        f"(e.g. self.up(x, output_size=skip.shape[2:])) so it follows the skip at every input "
        f"size, or construct it with {fixed}"
    )
