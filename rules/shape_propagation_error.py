"""
## What it does
Reports an op at which shape propagation failed at the example input: PyTorch (or ONNX shape
inference) would raise there, so the model cannot run at that size.

## Why is this bad?
A model that raises on its own example input cannot train. Typical causes are a `torch.cat` of
maps with different sizes, a kernel larger than its (padded) input, or a linear layer whose
`in_features` does not match the flattened features.

## Example
```python
x = torch.cat([self.up(x), skip], dim=1)   # 57x57 vs 56x56
```

Where a specific rule explains the failure, that rule reports it and this one stays quiet: a
merge whose branches disagree on a spatial size (`skip-connection-mismatch`, with its root
cause), a window larger than its padded input (`spatial-collapse`).

## Use instead
Make the branch sizes agree (pad or crop, or pick the padding that keeps the size), or choose an
input size the model accepts (`archlint sizes model.py`).

## References
- PyTorch docs, `torch.cat`: tensors must have the same shape except in the concatenating dim.
"""

from __future__ import annotations

import importlib
from functools import cache

from archlint.rule import rule

#: Specific rules that explain a failing node better than this one: (module, predicate(g, node)).
EXPLAINED_BY = (
    ("archlint_rules._merge_mismatch", "explains_failure"),
    ("archlint_rules.spatial_collapse", "collapsed_axes"),
)


@cache
def _explainers() -> tuple:
    found = []
    for module, predicate in EXPLAINED_BY:
        try:
            found.append(getattr(importlib.import_module(module), predicate))
        except (ImportError, AttributeError):
            continue  # that rule is not installed: nothing to defer to
    return tuple(found)


def explained_elsewhere(g, name: str) -> bool:
    return any(explains(g, name) for explains in _explainers())


@rule(
    id="shape-propagation-error",
    code="AL001",
    severity="error",
    summary="shape propagation fails at the example input",
)
def shape_propagation_error(ctx):
    for name in ctx.nodes():
        error = ctx.node(name)["error"]
        if error is None or explained_elsewhere(ctx.graph, name):
            continue
        yield ctx.finding(
            name,
            f"{ctx.node(name)['origin'] or ctx.node(name)['op']} fails at the example input: {error}",
            fix="make the operand sizes agree, or pick an input size the model accepts "
            "(see 'archlint sizes')",
        )
