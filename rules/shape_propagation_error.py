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

from archlint.graph import node_table
from archlint.passes.collapse import collapsed_axes
from archlint.passes.merge_mismatch import size_mismatch
from archlint.rule import rule


def explained_elsewhere(g, name: str) -> bool:
    """A more specific rule reports this node: skip-connection-mismatch (branches that disagree
    on a size) or spatial-collapse (a window larger than its input)."""
    return bool(size_mismatch(g, name)[0]) or bool(collapsed_axes(g, name))


@rule(
    id="shape-propagation-error",
    code="AL001",
    severity="error",
    summary="shape propagation fails at the example input",
)
def shape_propagation_error(ctx):
    table = node_table(ctx.graph) if ctx.graph is not None else {}
    # one comprehension over every node (the rule's only walk of the whole graph)
    for name in [n for n in ctx.nodes() if table[n]["error"] is not None]:
        error = table[name]["error"]
        if explained_elsewhere(ctx.graph, name):
            continue
        yield ctx.finding(
            name,
            f"{ctx.node(name)['origin'] or ctx.node(name)['op']} fails at the example input: {error}",
            fix="make the operand sizes agree, or pick an input size the model accepts "
            "(see 'archlint sizes')",
        )
