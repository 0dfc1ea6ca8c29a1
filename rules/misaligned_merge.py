"""
## What it does
Flags a merge (`torch.cat`, `+`) whose branches have the same size but whose pixels do not sit
over the same input pixels: the receptive fields of pixel (i, j) in the two branches are centred
on input points at least one input pixel apart, or drift apart across the map because the
branches have different effective strides. The offsets come from the receptive-field pass
(Araujo et al.) in input pixels.

Sub-pixel offsets (< 1 input pixel everywhere on the map) are not reported: a half-pixel shift is
what standard even-window resampling pairs give (a 2x2 pool next to a 3x3 stride-2 conv, the
ResNet-D average-pool shortcut), and flagging them would flag most reference networks.
Branches through global or adaptive pooling (SE gates, ASPP image pooling) have no position to
align and are skipped, as are broadcast operands of size 1.

## Why is this bad?
The merge combines features that describe different places. Shapes agree, so nothing fails:
the network just learns from shifted data (a skip cropped from the corner instead of the centre
is off by half the crop), and the error grows with each misaligned merge.

## Example
```python
skip = enc[:, :, :56, :56]                 # corner crop of a 64x64 map: 4 pixels off-centre
x = torch.cat([skip, self.up(x)], dim=1)
```

## Use instead
```python
skip = enc[:, :, 4:60, 4:60]               # centre crop: (64 - 56) / 2 from each side
x = torch.cat([skip, self.up(x)], dim=1)
```

## References
- Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill,
  2019 (section "Alignment of receptive fields" and the effective padding / centre).
- Ronneberger et al., "U-Net", 2015: the skip is centre-cropped.
"""

from __future__ import annotations

from fractions import Fraction

import networkx as nx

from archlint.graph import MERGES
from archlint.rule import rule
from archlint_rules._topology import fmt_size, merge_name, producer_name, spatial_out

#: Offsets below this many input pixels are half-pixel conventions, not bugs (see the docs).
MIN_OFFSET = 1

#: Ops after which a branch carries no position (one value for the whole map).
POSITIONLESS = frozenset({"global_pool", "adaptive_pool"})


def centre(rf) -> Fraction:
    """Centre of output pixel 0's receptive field, in input pixels (Araujo: (r-1)/2 - P)."""
    offset = getattr(rf, "center_offset", None)
    if offset is not None:
        return Fraction(offset)
    return Fraction(rf.size - 1, 2) - Fraction(rf.padding)


def max_offset(rf_a, rf_b, size: int) -> Fraction:
    """Largest distance, over the map's pixels 0..size-1, between the two branches' centres."""
    start = centre(rf_b) - centre(rf_a)
    drift = Fraction(rf_b.stride) - Fraction(rf_a.stride)
    return max(abs(start), abs(start + (size - 1) * drift))


@rule(
    id="misaligned-merge",
    code="AL202",
    severity="warning",
    summary="merged branches agree in size but their pixels sit over different input points",
)
def misaligned_merge(ctx):
    g = ctx.graph
    for merge in ctx.nodes(*MERGES):
        if ctx.node(merge).get("rf_aligned") is not False:
            continue
        branches = _positional_branches(g, merge)
        if len(branches) < 2:
            continue
        sizes = {spatial_out(g, b) for b in branches}
        if len(sizes) != 1:
            continue  # sizes disagree: a size mismatch, reported by other rules
        (size,) = sizes
        rfs = [g.nodes[b].get("rf") for b in branches]
        if any(not rf or any(r is None for r in rf) or len(rf) != len(size) for rf in rfs):
            continue
        reference, ref_rf = branches[0], rfs[0]
        for other, rf in zip(branches[1:], rfs[1:]):
            gaps = [max_offset(a, b, n) for a, b, n in zip(ref_rf, rf, size)]
            if max(gaps) < MIN_OFFSET:
                continue
            yield ctx.finding(
                merge,
                _message(g, merge, size, reference, ref_rf, other, rf, gaps),
                fix="keep pixel centres on both branches: crop the centre ((a - b) / 2 from each "
                "side) rather than a corner, pad symmetrically ((k - 1) / 2 with odd kernels), "
                "and give both branches the same overall stride",
                related=[g.nodes[reference]["location"], g.nodes[other]["location"]],
            )
            break


def _positional_branches(g, merge: str) -> list[str]:
    """The merge's operands that carry a map with positions (not broadcast, not pooled away)."""
    operands = list(dict.fromkeys(g.nodes[merge]["inputs"]))
    found = []
    for operand in operands:
        size = spatial_out(g, operand)
        if size is None or all(s == 1 for s in size):
            continue
        private = _private_part(g, operand, [o for o in operands if o != operand])
        if any(g.nodes[n]["op"] in POSITIONLESS for n in private):
            continue
        found.append(operand)
    return found


def _private_part(g, operand: str, others: list[str]) -> set[str]:
    """Nodes on ``operand``'s branch only: its ancestors that no other operand shares."""
    mine = nx.ancestors(g, operand) | {operand}
    shared = set()
    for other in others:
        shared |= nx.ancestors(g, other) | {other}
    return mine - shared


def _message(g, merge, size, reference, ref_rf, other, rf, gaps) -> str:
    def place(r) -> str:
        stride, start = Fraction(r.stride), centre(r)
        term = f"{_num(stride)}i" if stride != 1 else "i"
        return f"{term} + {_num(start)}" if start >= 0 else f"{term} - {_num(-start)}"

    axes = ["H", "W"] if len(size) == 2 else [f"axis {i}" for i in range(len(size))]
    detail = "; ".join(
        f"{axis}: {producer_name(g, reference)} at {place(a)}, {producer_name(g, other)} at "
        f"{place(b)} (up to {_num(gap)} px apart)"
        for axis, a, b, gap in zip(axes, ref_rf, rf, gaps)
        if gap > 0
    )
    return (
        f"the branches merged at {merge_name(g, merge)} are both {fmt_size(size)}, but pixel i "
        f"of each is centred on different input points ({detail})"
    )


def _num(value: Fraction) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
