"""
## What it does
Flags a learned or constant tensor (a parameter or buffer) that is added to, multiplied with or
concatenated beside activations along a dimension that holds spatial positions whose count
follows the input size: a ViT's `x + self.pos_embed` with `pos_embed` of shape
`(1, 1 + 14*14, C)`. It names the tensor, the dimension and the grid it was made for, which is
the only grid (so the only input size) at which the model runs.

A constant that only meets a fixed part of the positions stays quiet: a Swin relative position
bias spans the offsets inside one window, whatever the input size. So does an embedding that is
resized from the activation's size at run time (`F.interpolate(pos_embed, size=(h, w))`), and a
class token concatenated in front of the tokens. So does a model that adds the embedding as it
is only at the grid it was trained for and interpolates it at every other grid (Hugging Face's
DINOv2): the trace at the training size sees the plain addition, but the input-size analysis
shows PyTorch running the model at inputs that give other grids, so the resolution is not
fixed.

## Why is this bad?
The embedding has one entry per patch of the training resolution. At another input size the
token count differs and the addition fails ("The size of tensor a (257) must match the size of
tensor b (197)"), or, when the embedding is sliced to the token count, positions silently get
the embeddings of other positions.

## Example
```python
self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 14 * 14, dim))
...
x = torch.cat([cls, self.patch(x).flatten(2).transpose(1, 2)], dim=1)
x = x + self.pos_embed
```

## Use instead
```python
def forward(self, x):
    tokens = self.patch(x)                         # B, C, h, w
    h, w = tokens.shape[2:]
    pos = self.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(h, w), mode="bicubic").flatten(2).transpose(1, 2)
    ...
```
(timm's `dynamic_img_size=True` does this), or a relative or rotary position scheme.

## References
- Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021, section 3.2 (interpolating the
  position embeddings to fine-tune at a higher resolution).
- timm `VisionTransformer(dynamic_img_size=True)`, `resample_abs_pos_embed`.
- Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021.
"""

from __future__ import annotations

import numpy as np

from archlint.graph import output_shape
from archlint.passes.provenance import describe, grows
from archlint.rule import rule
from archlint_rules._topology import layer_name, size_sweep


def _has_constants(attrs) -> bool:
    """An op with a constant operand (the only kind locked_dims can find a lock in)."""
    return bool(attrs.extra.get("constant") or attrs.extra.get("constants"))


def locked_dims(g, node: str):
    """(constant record, output dim) pairs where a constant must match a dim of positions
    whose count follows the input size."""
    data = g.nodes[node]
    dims = data.get("provenance")
    if dims is None:
        return
    extra = data["attrs"].extra
    if data["op"] == "concat":
        records, skip = extra.get("constants", ()), (data["attrs"].axis or 0) % len(dims)
    else:
        records, skip = ([extra["constant"]] if extra.get("constant") else []), None
    for record in records:
        if record.get("adapts"):
            continue
        shape = tuple(record["shape"])
        offset = len(dims) - len(shape)
        for k, size in enumerate(shape):
            i = k + offset
            if i < 0 or i == skip or size == 1 or size != dims[i].size:
                continue
            if grows(dims[i]):
                yield record, i
                break


@rule(
    id="fixed-position-embedding",
    code="AL212",
    severity="warning",
    summary="a learned or constant embedding sized to one grid of positions fixes the input size",
)
def fixed_position_embedding(ctx):
    g = ctx.graph
    for node in [*ctx.nodes_where(_has_constants, "pointwise"),
                 *ctx.nodes_where(_has_constants, "concat")]:
        if ctx.node(node)["error"] is not None:
            continue
        for record, i in locked_dims(g, node):
            dims = ctx.node(node)["provenance"]
            dim = dims[i]
            if other_grid_runs(g, dim):
                continue
            grid = _grid([d for d in dims if d.spatial])
            yield ctx.finding(
                node,
                _message(g, node, record, i, dim, grid),
                fix="interpolate the embedding to the token grid at run time "
                "(F.interpolate(pos, size=(h, w), mode='bicubic'), as timm's "
                "dynamic_img_size=True does), or use relative / rotary position encodings",
                sizes=f"only inputs that give the {grid} grid it was made for "
                f"({_example(g)})",
            )


def other_grid_runs(g, dim) -> bool:
    """True when the input-size analysis has decided that PyTorch runs the model at an input
    size whose grid of positions differs from the example's: the trace saw the path taken at
    the training grid (DINOv2 adds its embedding as it is there, and interpolates it at every
    other grid), so the embedding does not fix the resolution. Unknown sizes prove nothing."""
    sweep = size_sweep(g)
    if sweep is None:
        return False
    for map_node in {d.map for d in dim.spatial if d.map in g}:
        at_example = output_shape(g, map_node)
        if at_example is None or len(at_example) < 3:
            continue
        for name in sweep.sweeps:
            try:
                arrays = sweep.spatial(map_node, name)
                runs = sweep.admissible_for(name) & ~sweep.undecided_for(name)
            except (KeyError, ValueError):
                continue
            if arrays is None or len(arrays) != len(at_example) - 2:
                continue
            other = np.zeros_like(runs)
            for values, size in zip(arrays, at_example[2:]):
                values = np.asarray(values)
                other |= (values > 0) & (values != size)
            if bool((runs & other).any()):
                return True
    return False


def _grid(dims) -> str:
    """Positions per input axis over the dims that hold them ('14x14')."""
    per_axis: dict[int, int] = {}
    for d in {x for dim in dims for x in dim.spatial}:
        per_axis[d.axis] = per_axis.get(d.axis, 1) * d.size
    return "x".join(str(per_axis[a]) for a in sorted(per_axis))


def _example(g) -> str:
    shapes = g.graph.get("input_shapes") or []
    if shapes and len(shapes[0]) > 2:
        return "the example " + "x".join(str(s) for s in shapes[0][2:])
    return "the example size"


def _message(g, node, record, i, dim, grid) -> str:
    data = g.nodes[node]
    verb = "concatenated beside" if data["op"] == "concat" else "combined with"
    shape = "x".join(str(s) for s in record["shape"])
    extra = f" + {dim.prefix} position-free token{'s' if dim.prefix > 1 else ''}" \
        if dim.prefix else ""
    maps = [d.map for d in dim.spatial if d.map in g]
    source = f" of {layer_name(g, maps[0])}" if maps else ""
    return (
        f"{record['name']} ({shape}) is {verb} the activations along dim {i}, which holds "
        f"{dim.size - dim.prefix} spatial positions{extra} ({describe(dim)}{source}); its size "
        f"is fixed, so the model runs only at the input size that gives a {grid} grid"
    )
