"""
## What it does
Once per model, reports which square input sizes the model accepts when that is not all of them:
"fine at 256x256; needs n >= 16 with n % 16 == 0; 255 fails first at torch.cat (line 45):
127x127 vs 128x128". It reads the input-size sweep (every size in the configured range: on
PyTorch from the symbolic engine, which runs `forward` with the sizes as symbols; on ONNX from
exact per-op formulas; sizes neither can decide are named as undecided), and is quiet when every size in the range works, when the example
size itself fails (that is an error reported where it happens), or when the example input is not
square (the sweep varies H = W together). Located at the model's input (its `forward`).

## Why is this bad?
It is a fact about the model, not a bug, which is why this is info: a U-Net with four 2x2 pools
needs sides divisible by 16, a classifier with a fixed flatten needs one exact size. Knowing it
up front saves a failed training run on a dataset whose images are 250 pixels wide, and tells
you how to pad or resize them.

## Example
```python
# U-Net, example input 1x3x256x256: works at 256, breaks at 250 (the skip at the 2nd
# decoder stage is 125x125, the upsampled map 124x124).
```

## Use instead
Resize or pad inputs to an admissible size (the finding gives the nearest one), or make the
model size-agnostic: `output_size=skip.shape[2:]` on transposed convs, `F.interpolate(x,
size=skip.shape[2:])`, adaptive pooling before a flatten.

## References
- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016.
"""

from __future__ import annotations

import numpy as np

from archlint.graph import input_nodes
from archlint.rule import rule
from archlint_rules._topology import example_size, fmt_size, size_sweep


@rule(
    id="input-size-constraints",
    code="AL301",
    severity="info",
    summary="the square input sizes the model accepts, when not all of them",
)
def input_size_constraints(ctx):
    g = ctx.graph
    sweep = size_sweep(g)
    size = example_size(g)
    inputs = input_nodes(g)
    if sweep is None or size is None or not inputs:
        return
    sides = np.asarray(sweep.sizes)
    admissible = np.asarray(sweep.admissible, dtype=bool)
    if admissible.all() or not admissible.any():
        return
    n = size[0]
    at_example = np.flatnonzero(sides == n)
    if len(set(size)) != 1 or at_example.size == 0 or not admissible[at_example[0]]:
        return  # the sweep is square; a failing example size is reported where it fails
    allowed = sweep.describe(admissible)
    message = f"fine at {fmt_size(size)}; square inputs (H = W = n) that work: {allowed}"
    if not getattr(sweep, "complete", True):
        undecided = sweep.undecided_for("square") if hasattr(sweep, "undecided_for") else None
        if undecided is not None and undecided.any():
            # one "only" per clause: the admissible sizes already say it
            message += f" (undecided: {sweep.describe(undecided).removesuffix(' only')})"
        else:
            message += " (some per-axis sizes are undecided)"
    broken = _nearest_failure(sides, admissible, n)
    first = sweep.first_failure(broken) if broken is not None else None
    related = []
    if first is not None:
        message += f"; {broken}x{broken} fails first at {_where(g, first)}"
        detail = _operand_sizes(g, sweep, first, broken)
        if detail:
            message += f": {detail}"
        related.append(g.nodes[first]["location"])
    nearest_ok = _nearest_admissible(sides, admissible, broken if broken is not None else n)
    fix = (
        f"resize or pad inputs to a size that works (nearest to {broken}: {nearest_ok}), or "
        "make the failing op follow its partner's size (output_size=skip.shape[2:], "
        "F.interpolate(x, size=skip.shape[2:]), adaptive pooling)"
    )
    yield ctx.finding(inputs[0], message, fix=fix, sizes=allowed, related=related)


def _nearest_failure(sides: np.ndarray, admissible: np.ndarray, n: int) -> int | None:
    failing = sides[~admissible]
    if failing.size == 0:
        return None
    order = np.lexsort((-failing, np.abs(failing - n)))  # nearest; on a tie the larger
    return int(failing[order[0]])


def _nearest_admissible(sides: np.ndarray, admissible: np.ndarray, n: int) -> int:
    ok = sides[admissible]
    order = np.lexsort((-ok, np.abs(ok - n)))
    return int(ok[order[0]])


def _where(g, name: str) -> str:
    node = g.nodes[name]
    label = node["location"].node or name
    origin = node["origin"] or node["op"]
    line = f", line {node['location'].line}" if node["location"].line else ""
    return f"{label} ({origin}{line})" if label != origin else f"{origin}{line}"


def _operand_sizes(g, sweep, name: str, side: int) -> str | None:
    """The failing op's input sizes at ``side`` (e.g. '124x124 vs 125x125'), when known."""
    index = int(np.flatnonzero(np.asarray(sweep.sizes) == side)[0])
    found = []
    for operand in dict.fromkeys(g.nodes[name]["inputs"]):
        try:
            axes = sweep.spatial(operand)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if axes is None:
            return None
        values = [int(np.asarray(a)[index]) for a in axes]
        if any(v <= 0 for v in values):
            return None
        found.append(fmt_size(values))
    if not found:
        return None
    return " vs ".join(found) if len(found) > 1 else f"input {found[0]}"
