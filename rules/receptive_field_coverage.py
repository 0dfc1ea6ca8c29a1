"""
## What it does
Reports how much of the input an image-level head can see: the receptive field of one pixel of
the last spatial feature map (the map a global pool, flatten or linear head reads) against the
input size, per axis ("each pixel sees at most 212x212 pixels: 41% x 41% of the 512x512
input"). Reported only when that field is smaller than the input, and only for models that end
in one decision per image: a dense-prediction output (segmentation, detection maps) sees a
window by design. The last map is found whatever its layout (an NC* map or tokens); when its
field is unknown (past an op no pass models, such as `F.fold`) nothing is reported, rather
than the field of an earlier map.

## Why is this bad?
It is not a bug in itself, which is why this is info. But a classifier whose last feature map
sees a third of the image pools decisions made from local texture: no unit ever relates two
distant parts of the object. Raising the input resolution without deepening the network
shrinks that share further.

## Example
```python
# Three 3x3 convs, then global pooling, on 128x128 images: each pooled unit saw 7x7 pixels.
self.features = nn.Sequential(conv3x3(3, 16), conv3x3(16, 16), conv3x3(16, 32))
self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
```

## Use instead
Deepen the backbone or add strided/dilated stages so the last map sees the whole object:
```python
self.features = nn.Sequential(conv3x3(3, 16, stride=2), conv3x3(16, 32, stride=2), ...)
```
or add global context before the head (attention, an ASPP image-pooling branch).

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
    producer_name,
    spatial_out,
    upstream,
)


def last_spatial_map(g) -> str | None:
    """The map the head reads: the last node (in topological order) that still holds spatial
    positions (an NC* map, or tokens, whatever the layout: see the axis provenance). None when
    that map's receptive field is not known (past an op no pass models, such as F.fold): an
    earlier map with a known field is not the one the head reads. Globally pooled data
    (``rf_global`` without a token-mixing cause: a global pool, an SE gate) has no local field
    and is passed over."""
    from archlint.graph import node_table, ops

    nodes = node_table(g)
    for name in reversed(list(ops(g))):  # the last one that holds positions: walk from the end
        node = nodes[name]
        rf = node.get("rf")
        if node["op"] in ("input", "output") or not rf:
            continue
        if node.get("rf_global") and not node.get("rf_global_cause"):
            continue
        if not _holds_positions(g, name):
            continue
        flags = node.get("rf_global_axes") or ()
        return name if all(r is not None or (i < len(flags) and flags[i]) for i, r in enumerate(rf)) else None
    return None


def _holds_positions(g, name: str) -> bool:
    dims = g.nodes[name].get("provenance")
    if dims is None:
        return spatial_out(g, name) is not None
    return any(d.spatial for d in dims)


def map_grid(g, name: str) -> tuple[int, ...] | None:
    """Positions per input axis of the map a node holds (14x14 for 196 ViT tokens)."""
    dims = g.nodes[name].get("provenance")
    if dims is None:
        return spatial_out(g, name)
    sizes: dict[int, int] = {}
    seen = set()
    for dim in dims:
        for d in dim.spatial:
            if (d.map, d.axis, d.size, d.step) not in seen:
                seen.add((d.map, d.axis, d.size, d.step))
                sizes[d.axis] = sizes.get(d.axis, 1) * d.size
    return tuple(sizes[a] for a in sorted(sizes)) or None


def feeds_image_level_head(g, name: str) -> bool:
    """True when the map ends in one decision per image (global pooling, a flatten, a linear
    layer): a dense-prediction output sees a window by design and is not reported."""
    import networkx as nx

    return any(
        g.nodes[n]["op"] in ("flatten", "linear", "reshape") or g.nodes[n].get("rf_global")
        for n in nx.descendants(g, name)
    )


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
    if size_in is None or last is None or not feeds_image_level_head(g, last):
        return
    rf = ctx.node(last).get("rf")
    flags = ctx.node(last).get("rf_global_axes") or (False,) * len(rf or ())
    if not rf or len(rf) != len(size_in):
        return
    if all(flags):
        return  # attention made every value read the whole input
    if any(r is None and not f for r, f in zip(rf, flags)):
        return
    fields = [n if f else int(r.size) for r, f, n in zip(rf, flags, size_in)]
    if all(f >= n for f, n in zip(fields, size_in)):
        return
    shares = " x ".join(f"{min(f, n) / n:.0%}" for f, n in zip(fields, size_in))
    anchor = _anchor(g, last)
    yield ctx.finding(
        anchor,
        f"each pixel of the map the head reads ({producer_name(g, last)}, "
        f"{fmt_size(map_grid(g, last) or ())}) sees at most {fmt_size(fields)} input pixels: "
        f"{shares} of the {fmt_size(size_in)} input",
        fix=f"if the task needs whole-image context: add strided or dilated stages (or depth) "
        f"until the field reaches {fmt_size(size_in)}, or add global context (attention) "
        "before the head",
        sizes=f"the field covers the whole input for inputs up to {fmt_size(fields)}",
    )


def _anchor(g, name: str) -> str:
    """The layer that produced the map (skipping activations and norms), where a change goes."""
    if g.nodes[name]["op"] not in SIZE_NEUTRAL:
        return name
    before = upstream(g, name)
    return before if before is not None and g.nodes[before]["op"] != "input" else name
