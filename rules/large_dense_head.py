"""
## What it does
Flags a flatten followed by a linear layer that holds most of the model's parameters: more than
half of all conv and linear parameters, and more than one million of them.

## Why is this bad?
Flattening a spatial map into a dense layer makes that one layer's weight grow with the map's
area: VGG-16's `Linear(512*7*7, 4096)` has 102.8M of the network's 138M parameters. It dominates
memory and overfitting, and ties the model to one input resolution (or to an adaptive pool that
hides it). Global average pooling before the classifier does the same job with a fraction of the
weights (the design of ResNet, MobileNet and most models since Network-in-Network).

## Example
```python
self.head = nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 4096))   # 102.8M parameters
```

## Use instead
```python
self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 4096))  # 2.1M
```

## References
- Lin, Chen & Yan, "Network In Network", ICLR 2014 (global average pooling).
- Simonyan & Zisserman, "Very Deep Convolutional Networks", 2014, Table 2 (parameter counts).
"""

from __future__ import annotations

from archlint.graph import node_table
from archlint.rule import rule
from archlint_rules._topology import downstream, fmt_size, spatial_in

#: The head must hold more than this share of all conv/linear parameters...
MIN_SHARE = 0.5
#: ...and more than this many parameters: small models are allowed a dominant classifier.
MIN_PARAMS = 1_000_000


def layer_params(node: dict) -> int:
    """Trainable parameters of a conv / transposed conv / linear from its attributes (0 when the
    frontend did not record the geometry)."""
    attrs = node["attrs"]
    op = node["op"]
    bias = attrs.bias is not False  # PyTorch's default is a bias; ONNX records it exactly
    if op == "linear":
        if attrs.in_features is None or attrs.out_features is None:
            return 0
        return attrs.in_features * attrs.out_features + (attrs.out_features if bias else 0)
    if op in ("conv", "conv_transpose"):
        if attrs.in_channels is None or attrs.out_channels is None or not attrs.kernel:
            return 0
        window = 1
        for k in attrs.kernel:
            window *= k
        groups = attrs.groups or 1
        return (
            attrs.in_channels * attrs.out_channels // groups * window
            + (attrs.out_channels if bias else 0)
        )
    return 0


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def _flattens_spatial_map(g, name: str) -> bool:
    """A flatten (or a reshape to 2-d) of a map with more than one spatial position: flattening
    a globally pooled 1x1 map is the fix this rule recommends, not the bug."""
    node = g.nodes[name]
    shape = node["shapes"][0] if node["shapes"] else None
    if node["op"] != "flatten" and not (node["op"] == "reshape" and shape is not None and len(shape) == 2):
        return False
    size = spatial_in(g, name)
    return size is not None and any(s > 1 for s in size)


@rule(
    id="large-dense-head",
    code="AL210",
    severity="warning",
    summary="flatten + linear layer holding most of the model's parameters",
)
def large_dense_head(ctx):
    g = ctx.graph
    total = None  # summed over every node only once a flatten of a spatial map is found
    for name in ctx.nodes("flatten", "reshape"):
        if not _flattens_spatial_map(g, name):
            continue
        if total is None:
            total = sum(layer_params(d) for d in node_table(g).values())
        if total == 0:
            return
        for linear, _ in downstream(g, name):
            if g.nodes[linear]["op"] != "linear":
                continue
            params = layer_params(g.nodes[linear])
            if params <= MIN_PARAMS or params <= MIN_SHARE * total:
                continue
            message = _message(g, name, linear, params, total)
            yield ctx.finding(linear, message, fix=_fix(g, name, linear))


def _message(g, flatten: str, linear: str, params: int, total: int) -> str:
    attrs = g.nodes[linear]["attrs"]
    source = g.nodes[flatten]["inputs"][0] if g.nodes[flatten]["inputs"] else None
    shape = g.nodes[source]["shapes"][0] if source and g.nodes[source]["shapes"] else None
    flattened = "a flattened map"
    if shape and len(shape) > 2:
        flattened = f"a flattened {fmt_size(shape[1:])} map"
    return (
        f"Linear({attrs.in_features}, {attrs.out_features}) on {flattened} holds "
        f"{params:,} of the model's {total:,} conv/linear parameters ({params / total:.1%})"
    )


def _fix(g, flatten: str, linear: str) -> str:
    attrs = g.nodes[linear]["attrs"]
    source = g.nodes[flatten]["inputs"][0] if g.nodes[flatten]["inputs"] else None
    shape = g.nodes[source]["shapes"][0] if source and g.nodes[source]["shapes"] else None
    if not shape or len(shape) < 3:
        return "pool the map globally before the classifier instead of flattening it"
    channels = shape[1]
    pooled = channels * attrs.out_features + attrs.out_features
    return (
        f"pool globally before the classifier: nn.AdaptiveAvgPool{len(shape) - 2}d(1), "
        "nn.Flatten(), "
        f"nn.Linear({channels}, {attrs.out_features}) has {_human(pooled)} parameters "
        f"instead of {_human(layer_params(g.nodes[linear]))}"
    )
