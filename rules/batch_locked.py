"""
## What it does
Finds a model that works only at batch 1 (or only at the example batch): a `view(1, -1)`, a
`reshape(1, C, H * W)`, or a constant expanded to batch 1 that then meets the batch. Located at
the line (PyTorch) or the ONNX node that writes the literal batch, with the fix.

- PyTorch: the batch is a symbol of its own in the symbolic size engine, so the batch sizes that
  run are known exactly (JSON `admissible_sizes.batch`). It fires when only batch 1 (or only the
  example batch) runs, at the call that moved the batch symbol out of dim 0 (`view(1, -1)`) or
  that made the batch-1 tensor the failing op was fed (`expand(1, ...)`).
- ONNX: the signal is a symbolic batch in the file's input (`dim_param`, or no `dim_value`).
  ONNX's own shape inference, with data propagation and that batch kept as a symbol, shows a
  `Reshape` whose output has a literal batch where its data had the symbol (`[1, C]`, `[1, -1]`;
  `[0, C]` and `[-1, C]` keep the batch), and an `Expand`/`ConstantOfShape` constant of literal
  batch that a `Concat` joins with the batch. A file whose input batch is a fixed number says
  nothing about other batches and is never reported.

## Why is this bad?
The model passes every test at batch 1 and fails the first time it is trained or served with
a real batch, or worse, silently mixes samples: `view(1, -1)` on a batch of 8 makes one long
row out of eight images.

## Example
```python
x = self.pool(self.conv(x))
x = x.view(1, -1)  # batch 1 only
```

## Use instead
```python
x = x.flatten(1)  # or x.view(x.shape[0], -1)
```
and `self.cls.expand(x.shape[0], -1, -1)` for a constant that meets the batch. In an ONNX
graph, a Reshape target of `[0, C]` or `[-1, C]`, and an Expand shape built from `Shape(x)`.

## References
- PyTorch, `torch.Tensor.view` and `torch.flatten`:
  https://pytorch.org/docs/stable/generated/torch.flatten.html
- ONNX operators, Reshape (0 copies the input dim, -1 infers it):
  https://onnx.ai/onnx/operators/onnx__Reshape.html
"""

from __future__ import annotations

import numpy as np

from archlint.graph import Location, input_nodes
from archlint.rule import rule

FIX = "use the batch from the input: x.flatten(1) or x.view(x.shape[0], -1) (expand(x.shape[0], ...))"
ONNX_FIX_RESHAPE = ("keep the batch in the target shape: 0 (copies the input's dim) or -1 there, "
                    "e.g. [0, C] or [-1, C]; in the PyTorch source, x.flatten(1) or "
                    "x.view(x.shape[0], -1)")
ONNX_FIX_CONSTANT = ("expand the constant to the input's batch (the Expand shape from "
                     "Shape(x)[0]); in the PyTorch source, self.cls.expand(x.shape[0], -1, -1)")


@rule(
    id="batch-locked",
    code="AL106",
    severity="error",
    summary="the model works only at batch 1 or at the example batch",
)
def batch_locked(ctx):
    g = ctx.graph
    if g is None or not input_nodes(g):
        return
    if ctx.frontend == "onnx":
        yield from _onnx(ctx, g)
        return
    result = g.graph.get("symbolic_sizes")
    if result is None or "batch" not in result.sweeps or result.example_batch is None:
        return
    ok, undecided = result.ok["batch"], result.undecided["batch"]
    example = result.example_batch
    if not ok[example - result.lo]:
        return  # the example itself fails: reported where it fails
    fails = ~ok & ~undecided
    if not fails.any():
        return
    works = result.lo + np.flatnonzero(ok)
    only = "batch 1" if list(works) == [1] else (
        f"batch {example}" if list(works) == [example] else None)
    if only is None:
        return  # some other batches run: a size rule, not a lock
    location = _lock_location(result)
    if location is None:
        location = g.nodes[input_nodes(g)[0]]["location"]
    yield ctx.finding(location, f"the model works only at {only}: this line fixes the batch "
                                "instead of reading it from the input", fix=FIX)


def _lock_location(result):
    if result.batch_lock is not None:
        file, line, _ = result.batch_lock
        return Location(file=file, line=line, node="forward")
    for run in result.runs:
        if not run.ok and run.point.get("batch") != result.example_batch and run.error_frame:
            return Location(file=run.error_frame[0], line=run.error_frame[1], node="forward")
    return None


def _onnx(ctx, g):
    """Facts of the ONNX frontend (archlint/frontends/onnx/batch_lock.py): ONNX's shape
    inference with the file's symbolic batch kept as a symbol says where it is lost."""
    if not g.graph.get("input_batch_symbolic"):
        return
    file = g.graph.get("target")
    for lock in g.graph.get("batch_locks") or ():
        fix = ONNX_FIX_RESHAPE if lock.op_type == "Reshape" else ONNX_FIX_CONSTANT
        yield ctx.finding(Location(file=file, line=None, node=lock.node), lock.reason, fix=fix)
