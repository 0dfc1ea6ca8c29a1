"""
## What it does
Flags a convolution with a bias that feeds straight into a BatchNorm (or InstanceNorm) and
nothing else: the norm subtracts each channel's mean, bias included, so the bias has no effect.

## Why is this bad?
It is a parameter per channel that is trained for nothing (its gradient is zero), costs memory and
optimizer state, and suggests to readers that it matters. The norm's own shift (`beta`) already
provides the per-channel offset.

## Example
```python
self.conv = nn.Conv2d(64, 128, 3, padding=1)    # bias=True by default
self.bn = nn.BatchNorm2d(128)
```

## Use instead
```python
self.conv = nn.Conv2d(64, 128, 3, padding=1, bias=False)
self.bn = nn.BatchNorm2d(128)
```
`archlint --fix` makes this edit (a safe fix).

## References
- Ioffe & Szegedy, "Batch Normalization", ICML 2015, section 3.2: the bias "can be ignored
  since its effect will be canceled by the subsequent mean subtraction".
"""

from __future__ import annotations

from archlint.fixes import Applicability, call_fix
from archlint.rule import rule
from archlint_rules._topology import layer_name

#: Norms that subtract a per-channel mean (the ONNX op types and torch class names).
CHANNEL_MEAN_NORMS = ("batchnorm", "instancenorm", "batchnormalization", "instancenormalization")


#: ``--fix`` passes bias=False at the conv's construction call. Safe: every output keeps its shape,
#: and the bias it drops is cancelled by the norm.
FIX_APPLICABILITY = Applicability.SAFE


def subtracts_channel_mean(node: dict) -> bool:
    origin = (node.get("origin") or "").lower().replace("_", "")
    return node["op"] == "norm" and any(kind in origin for kind in CHANNEL_MEAN_NORMS)


@rule(
    id="conv-bias-before-norm",
    code="AL209",
    severity="info",
    summary="conv bias directly followed by BatchNorm is cancelled by its mean subtraction",
)
def conv_bias_before_norm(ctx):
    g = ctx.graph
    for name in ctx.nodes_where(lambda attrs: attrs.bias is True, "conv", "conv_transpose"):
        consumers = list(g.successors(name))
        if len(consumers) != 1 or not subtracts_channel_mean(g.nodes[consumers[0]]):
            continue
        norm = consumers[0]
        kind = "transposed conv" if ctx.node(name)["op"] == "conv_transpose" else "conv"
        yield ctx.finding(
            name,
            f"{kind} has a bias, but its only consumer {layer_name(g, norm)} "
            f"({g.nodes[norm]['origin']}) subtracts each channel's mean, cancelling it",
            fix="pass bias=False (the norm's own shift provides the offset)",
            related=[g.nodes[norm]["location"]],
            autofix=call_fix(ctx.node(name), {"bias": False}, FIX_APPLICABILITY),
        )
