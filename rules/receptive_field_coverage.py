"""
## What it does
Reports how much of the input the last spatial feature map can see: the receptive field of one
of its pixels against the input size, per axis ("each output sees at most 212x212 pixels: 41% x
41% of the 512x512 input"). Reported only when the receptive field is smaller than the input.

## Why is this bad?
It is not a bug in itself, which is why this is info. But a classifier whose last feature map
sees a third of the image decides from local texture, and a segmenter whose outputs see a small
window cannot use the context the task may need. Raising the input resolution without deepening
the network shrinks that share further.

## Example
```python
# A 5-layer 3x3 backbone on 512x512 images: each output sees 11x11 pixels (2% per axis).
```

## Use instead
Deepen the backbone or add strided/dilated stages to grow the receptive field, or add global
context (global pooling, attention, an ASPP image-pooling branch) if the task needs the whole
image.

## References
- Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill,
  2019.
- Luo et al., "Understanding the Effective Receptive Field in Deep CNNs", NeurIPS 2016 (the
  effective field is smaller still).
"""

from __future__ import annotations

from archlint.rule import rule
from archlint_rules._topology import (
    SIZE_NEUTRAL,
    example_size,
    fmt_size,
    layer_name,
    spatial_out,
    upstream,
)

def last_spatial_map(g) -> str | None:
    """The map the head reads: the last node (in topological order) whose output has spatial
    axes with a known receptive field. Globally pooled data (``rf_global``: a global pool, an
    SE gate) has no local field and is passed over; so is everything after a flatten."""
    from archlint.graph import ops

    last = None
    for name in ops(g):
        node = g.nodes[name]
        rf = node.get("rf")
        if node["op"] in ("input", "output") or node.get("rf_global") or not rf:
            continue
        if spatial_out(g, name) is not None and all(r is not None for r in rf):
            last = name
    return last


@rule(
    id="receptive-field-coverage",
    code="AL211",
    severity="info",
    summary="the last feature map's receptive field against the input size",
)
def receptive_field_coverage(ctx):
    g = ctx.graph
    size_in = example_size(g)
    last = last_spatial_map(g)
    if size_in is None or last is None:
        return
    rf = ctx.node(last).get("rf")
    if not rf or any(r is None for r in rf) or len(rf) != len(size_in):
        return
    fields = [int(r.size) for r in rf]
    if all(f >= n for f, n in zip(fields, size_in)):
        return
    shares = " x ".join(f"{min(f, n) / n:.0%}" for f, n in zip(fields, size_in))
    anchor = _anchor(g, last)
    yield ctx.finding(
        anchor,
        f"each pixel of the last feature map ({layer_name(g, last)}, "
        f"{fmt_size(spatial_out(g, last))}) sees at most {fmt_size(fields)} input pixels: "
        f"{shares} of the {fmt_size(size_in)} input",
        fix="if the task needs more context: deepen the backbone, add a strided or dilated "
        "stage, or add a global-context branch (global pooling, attention)",
        sizes=f"the field covers the whole input for inputs up to {fmt_size(fields)}",
    )


def _anchor(g, name: str) -> str:
    """The layer that produced the map (skipping activations and norms), where a change goes."""
    if g.nodes[name]["op"] not in SIZE_NEUTRAL:
        return name
    before = upstream(g, name)
    return before if before is not None and g.nodes[before]["op"] != "input" else name
