"""
## What it does
Reports a `raise`, `assert` or `torch._check` in `forward` that constrains the input size,
at its line, naming the constraint: "H and W must be multiples of 32 (raised at model.py:14)".
It reads the symbolic size engine: `forward` runs with the input sizes as symbols, and a run
that raises from Python code tells which sizes take that path. Info when the example size
passes the check; an error (exit 1) when the check fires at the example size. The constraint is
the set of sizes the check lets through over the whole range (the guards evaluated at every size),
so the text and the `sizes:` line never disagree. Only checks in the model's own files count
(a library's internal check, such as InstanceNorm refusing one spatial element, narrows the
admissible sizes instead); ONNX files have no Python forward and get no such finding.

## Why is this bad?
Nothing is wrong with checking the input, which is why this is info: it says what the check
demands, so you can resize your data before a run dies on it. When it fires at the example
size, the model cannot run on the input you gave it.

## Example
```python
def forward(self, x):
    h, w = x.shape[-2:]
    if h % 32 or w % 32:
        raise ValueError("input must be divisible by 32")  # H and W must be multiples of 32
```

## Use instead
Feed sizes the check accepts (pad or resize), or pad inside `forward`
(`F.pad(x, (0, -w % 32, 0, -h % 32))`) and crop the output back.

## References
- PyTorch, "Dynamic shapes" (guards and `torch._check`):
  https://pytorch.org/docs/stable/torch.compiler_dynamic_shapes.html
"""

from __future__ import annotations

from archlint.graph import Location, input_nodes
from archlint.rule import rule


@rule(
    id="input-size-check",
    code="AL302",
    severity="info",
    summary="a raise/assert/torch._check in forward constrains the input size",
    frontends=("torch",),
)
def input_size_check(ctx):
    g = ctx.graph
    result = g.graph.get("symbolic_sizes") if g is not None else None
    if result is None or not result.checks or not input_nodes(g):
        return
    for check in result.checks:
        where = f"{check.file}:{check.line}"
        location = Location(file=check.file, line=check.line, node="forward")
        if check.fires_at_example:
            yield ctx.finding(
                location,
                f"the example input fails a check in forward: {check.constraint} "
                f"(raised at {where}: {check.error})",
                fix="feed an input size the check accepts, or pad inside forward",
                severity="error",
            )
        else:
            yield ctx.finding(
                location,
                f"{check.constraint} (raised at {where})",
                fix="resize or pad inputs to sizes the check accepts",
            )
