"""
## What it does
Flags a flatten, view or reshape that folds spatial positions into features and feeds a linear
layer (directly, or through activations/dropout) whose `in_features` matches only the grid one
input resolution gives. It says which input sizes the linear layer accepts (from the input-size
sweep), e.g. "only H = W = 224 (7x7 after features)". It stays quiet when an adaptive or global
pool fixes the grid first (VGG's `AdaptiveAvgPool2d((7, 7))` + `Linear(512 * 7 * 7, 4096)`).

`x.view(-1, N)` with a constant `N` is an error: at any other resolution it does not raise when
the element count happens to divide, it silently changes the batch size instead.

It reads the axis provenance, so it follows positions through any layout: it also fires on a
Linear (or `x @ self.weight`) over a dimension of tokens, such as MLP-Mixer's token-mixing
`Linear(196)` behind a transpose, and on a reshape to a literal size that lands on a dimension of
positions (`x.view(1, 196, C)`). It stays quiet when the weight spans channels, attention heads
(`(B, h, N, d).transpose(1, 2).reshape(B, N, C)`) or the offsets inside a window, which do not
change with the input size.

## Why is this bad?
The model works at the one size it was written for and fails at every other one, usually far
from the line that causes it ("mat1 and mat2 shapes cannot be multiplied"). With
`view(-1, N)` it is worse: a 64x64 image in a network written for 32x32 comes out as a batch of
four "samples", each a quarter of the image, and the loss is computed against the wrong labels.

## Example
```python
x = self.features(x)                 # 512x7x7 at 224x224
x = x.view(-1, 512 * 7 * 7)
x = self.fc(x)                       # nn.Linear(512 * 7 * 7, 4096)
```

## Use instead
```python
self.pool = nn.AdaptiveAvgPool2d((7, 7))     # or nn.AdaptiveAvgPool2d(1) + Linear(512, ...)
x = torch.flatten(self.pool(self.features(x)), 1)
```

## References
- PyTorch docs, `nn.AdaptiveAvgPool2d` and `torch.flatten`.
- Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", 2021 (token-mixing MLPs
  fix the number of patches).
- torchvision's VGG/AlexNet heads (adaptive pooling before the classifier), and Lin et al.,
  "Network In Network", 2013 (global average pooling instead of a fixed-size dense head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from archlint.graph import output_shape
from archlint.passes.provenance import describe, grows
from archlint.rule import rule
from archlint_rules._topology import layer_behind, layer_name, size_sweep

#: Ops between the flatten and the linear that do not touch the features' meaning.
PASS_THROUGH = ("pointwise",)
FOLDING = ("flatten", "reshape")
GRID_FIXING = ("adaptive_pool", "global_pool")


@dataclass(frozen=True)
class Fold:
    """A flatten/reshape whose last output axis folds input axes ``folded_from..`` (always
    including the last spatial axis) into features."""

    node: str
    source: str  # the producer of the folded map
    linear: str
    in_shape: tuple[int, ...]
    folded_from: int  # first input axis folded into the features
    features: int


def fold_feeding(g, linear: str) -> Fold | None:
    """The flatten/reshape feeding ``linear`` (through pointwise ops) that folds spatial axes."""
    node = linear
    while True:
        inputs = g.nodes[node]["inputs"]
        if not inputs:
            return None
        node = inputs[0]
        if g.nodes[node]["op"] not in PASS_THROUGH:
            break
    if g.nodes[node]["op"] not in FOLDING or not g.nodes[node]["inputs"]:
        return None
    source = g.nodes[node]["inputs"][0]
    in_shape, out_shape = output_shape(g, source), output_shape(g, node)
    if in_shape is None or out_shape is None or len(in_shape) < 3:
        return None
    first = _folded_from(in_shape, out_shape[-1])
    if first is None:
        return None
    return Fold(node, source, linear, tuple(in_shape), first, out_shape[-1])


def _folded_from(in_shape, features: int) -> int | None:
    """The first input axis of the suffix whose product is the output's last axis."""
    for first in range(1, len(in_shape)):
        if math.prod(in_shape[first:]) == features:
            return first
    return None


def grid_fixed(g, fold: Fold) -> bool:
    """Does the folded map's spatial size not depend on the input size?"""
    sweep = size_sweep(g)
    arrays = _spatial_arrays(sweep, fold.source)
    if arrays is not None:
        return all(np.unique(a[a > 0]).size <= 1 for a in arrays)
    return _fixed_structurally(g, fold.source)


def _fixed_structurally(g, node: str) -> bool:
    """Every path back to a model input crosses an adaptive/global pool or a fixed-size resize."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        data = g.nodes[current]
        if data["op"] in GRID_FIXING:
            continue
        if data["op"] == "upsample" and data["attrs"].size and data["attrs"].size_from is None:
            continue
        if data["op"] == "input":
            return False
        stack.extend(data["inputs"])
    return True


def _spatial_arrays(sweep, node: str):
    if sweep is None:
        return None
    try:
        arrays = sweep.spatial(node)
    except (KeyError, ValueError):
        return None
    return None if arrays is None else [np.asarray(a, dtype=np.int64) for a in arrays]


def batch_changing_view(g, fold: Fold) -> bool:
    """``x.view(-1, N)``: the batch entry is -1 and every other entry is a constant."""
    attrs = g.nodes[fold.node]["attrs"]
    target = attrs.target_shape
    return (
        g.nodes[fold.node]["op"] == "reshape"
        and target is not None
        and len(target) >= 2
        and target[0] == -1
        and all(isinstance(t, int) and t > 0 for t in target[1:])
    )


def _consumes_positions(g, node: str) -> bool | None:
    """Does the weight of this Linear / matmul span a dim whose size follows the input size?
    None when the provenance is unknown."""
    inputs = g.nodes[node]["inputs"]
    dims = g.nodes[inputs[0]].get("provenance") if inputs else None
    if dims is None or not dims:
        return None
    return grows(dims[-1])


def _weight_layers(ctx):
    """Linear layers, and matmuls with a parameter on the right (``x @ self.weight``)."""
    for name in ctx.nodes("linear"):
        yield name
    for name in ctx.nodes("matmul"):
        weight = ctx.node(name)["attrs"].extra.get("weight")
        if weight is not None and weight.get("slot") == 1:
            yield name


def fixed_reshapes(g):
    """(reshape node, output dim) where a constant target entry holds a dim whose size follows
    the input size: the reshape works at one resolution only."""
    from archlint.graph import ops

    if g.graph.get("frontend") != "torch" or g.graph.get("graph_module") is None:
        # ONNX exports and eager captures see every size as a number: no sign of what the
        # author wrote (x.shape[1] or a literal)
        return
    for name in ops(g):
        data = g.nodes[name]
        target = data["attrs"].target_shape
        dims = data.get("provenance")
        if data["op"] != "reshape" or target is None or dims is None or len(target) != len(dims):
            continue
        for i, (entry, dim) in enumerate(zip(target, dims)):
            if isinstance(entry, int) and entry > 0 and grows(dim):
                yield name, i
                break


@rule(
    id="hardcoded-flatten",
    code="AL103",
    severity="warning",
    summary="flatten into a linear layer whose in_features fits only one input resolution",
)
def hardcoded_flatten(ctx):
    g = ctx.graph
    reported = set()
    for linear in _weight_layers(ctx):
        if ctx.node(linear)["error"] is not None:
            continue  # fails at the example input: shape-propagation-error says so
        spans_positions = _consumes_positions(g, linear)
        if spans_positions is False:
            continue  # its weight spans channels or window offsets: any resolution works
        fold = fold_feeding(g, linear)
        if fold is None and spans_positions:
            reported.add(linear)
            yield _token_finding(ctx, linear)
            continue
        if fold is None or fold.node in reported:
            continue
        if grid_fixed(g, fold):
            continue
        reported.add(fold.node)
        in_features = ctx.node(linear)["attrs"].in_features or fold.features
        locked = _locked_to(g, fold, in_features)
        batch = batch_changing_view(g, fold)
        yield ctx.finding(
            fold.node,
            _message(g, fold, in_features, locked, batch),
            fix=_fix(fold),
            severity="error" if batch else None,
            sizes=f"the features match in_features at {locked}" if locked else None,
            related=[ctx.node(linear)["location"]],
        )
    for node, i in fixed_reshapes(g):
        folds = {n for n in reported}
        if node in folds or ctx.node(node)["error"] is not None:
            continue
        reported.add(node)
        yield _reshape_finding(ctx, node, i)


def _token_finding(ctx, layer: str):
    """A Linear (or matmul weight) over a dim of positions: MLP-Mixer's token mixing."""
    g = ctx.graph
    src = g.nodes[layer]["inputs"][0]
    dim = g.nodes[src]["provenance"][-1]
    node = g.nodes[layer]
    width = node["attrs"].in_features or dim.size
    return ctx.finding(
        layer,
        f"{node['origin'] or node['op']} {_name(g, layer)} mixes the last dim of its input, "
        f"which holds {dim.size} spatial positions ({describe(dim)} of "
        f"{_name(g, _grid_source(g, dim))}); its weight has {width} inputs, so the model runs "
        "only at the input size that gives exactly that many positions",
        fix="mix positions with something that follows the grid: pool to a fixed grid "
        "first (nn.AdaptiveAvgPool2d), or use attention / a convolution over the positions; "
        "if a fixed size is intended, resize every input to it",
    )


def _grid_source(g, dim) -> str:
    maps = [d.map for d in dim.spatial if d.map in g]
    return maps[0] if maps else next(iter(g.nodes))


def _reshape_finding(ctx, node: str, i: int):
    g = ctx.graph
    data = g.nodes[node]
    dim = data["provenance"][i]
    target = data["attrs"].target_shape
    return ctx.finding(
        node,
        f"{data['origin'] or data['op']} to the fixed shape {tuple(target)} puts {target[i]} in "
        f"dim {i}, which holds spatial positions ({describe(dim)}); at any other input size "
        "the element count differs and the reshape fails or regroups the wrong values",
        fix="compute the sizes from the tensor (B, N, C = x.shape; x.view(B, N, C)) or use -1 "
        "for the dim of positions",
    )


def _locked_to(g, fold: Fold, in_features: int) -> str | None:
    """'H = W in {224} (7x7 after features)': the swept sizes at which the features match."""
    sweep = size_sweep(g)
    arrays = _spatial_arrays(sweep, fold.source)
    grid = "x".join(str(s) for s in fold.in_shape[2:])
    if arrays is None:
        return None
    matches = _feature_counts(fold, arrays) == in_features
    if not matches.any():
        return None
    return f"H = W in {sweep.describe(matches)} ({grid} after {_name(g, fold.source)})"


def _feature_counts(fold: Fold, arrays) -> np.ndarray:
    """Features the fold gives at every swept size (0 where the map is undefined)."""
    constant = math.prod(fold.in_shape[fold.folded_from:2]) if fold.folded_from < 2 else 1
    counts = np.full(arrays[0].shape, constant, dtype=np.int64)
    for axis, sizes in enumerate(arrays, start=2):
        if axis >= fold.folded_from:
            counts = counts * np.where(sizes > 0, sizes, 0)
    return counts


def _message(g, fold: Fold, in_features: int, locked: str | None, batch: bool) -> str:
    node = g.nodes[fold.node]
    grid = "x".join(str(s) for s in fold.in_shape[2:])
    folded = "x".join(str(s) for s in fold.in_shape[fold.folded_from:])
    linear = g.nodes[fold.linear]
    text = (
        f"{node['origin'] or node['op']} folds a {folded} map ({grid} spatial positions) into "
        f"{fold.features} features for {_name(g, fold.linear)} "
        f"({linear['origin'] or 'linear'} with in_features={in_features}); the feature count "
        "depends on the input size, so it fits the linear layer "
        + (f"at {locked}" if locked else f"only at the example size ({grid} after {_name(g, fold.source)})")
    )
    if batch:
        text += _batch_text(g, fold, in_features)
    return text


def _batch_text(g, fold: Fold, in_features: int) -> str:
    """The view(-1, N) consequence, with a concrete size where the batch silently changes."""
    base = (
        f"; worse, view(-1, {in_features}) does not fail at other sizes whose element count "
        f"divides {in_features}: it silently changes the batch size"
    )
    sweep = size_sweep(g)
    arrays = _spatial_arrays(sweep, fold.source)
    if arrays is None:
        return base
    batch = fold.in_shape[0]
    counts = _feature_counts(fold, arrays) * batch
    sizes = np.asarray(sweep.sizes)
    changes = (counts > 0) & (counts % in_features == 0) & (counts != batch * in_features)
    if not changes.any():
        return base
    i = int(np.flatnonzero(changes)[0])
    return (
        f"{base} (at {sizes[i]}x{sizes[i]} a batch of {batch} becomes a batch of "
        f"{counts[i] // in_features})"
    )


def _fix(fold: Fold) -> str:
    grid = fold.in_shape[2:]
    grid_text = str(grid[0]) if len(set(grid)) == 1 else str(tuple(grid))
    return (
        f"pool to a fixed grid before flattening: nn.AdaptiveAvgPool2d({grid_text}) keeps this "
        "linear layer as it is, or nn.AdaptiveAvgPool2d(1) with in_features = channels; then "
        "torch.flatten(x, 1) (never view(-1, N))"
    )


def _name(g, node: str) -> str:
    """The layer's name, looking past activations/norms to the layer a user recognises."""
    return layer_name(g, layer_behind(g, node))
