"""
## What it does
Flags a merge (`torch.cat`, `+`) whose branches have the same size but whose pixels do not sit
over the same input pixels: the receptive fields of pixel (i, j) in the two branches are centred
on different input points (a constant shift, or a drift across the map when the effective
strides differ). The offsets come from the receptive-field pass (Araujo et al.), in input
pixels: each branch's centre of pixel i is averaged over the phase of any upsampling on its
path (after a x2 nearest upsample, pixels 2i and 2i+1 read the same source pixel; their mean
centre is where the pair really sits), which is also the mean of the true, weight-averaged
centres for nearest and bilinear resampling.

Offsets smaller than one pixel of the coarser grid involved are not reported: one input pixel
for maps that were never upsampled, and `stride * period` of the receptive field for upsampled
ones (4 input pixels after a x2 upsample of a stride-4 map). Below that the shift is the
resampling's own phase, not a wiring bug: a 2x2 pool beside a 3x3 stride-2 conv (half a pixel,
as in the ResNet-D shortcut), nearest or bilinear upsampling in an FPN top-down path, a 2x2/2
transposed conv in U-Net. Flagging those would flag most reference networks.
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

from archlint.graph import MERGES
from archlint.rule import rule
from archlint_rules._topology import fmt_size, merge_name, producer_name, spatial_out

#: Offsets below this many input pixels are half-pixel conventions, not bugs (see the docs).
MIN_OFFSET = 1


def coarse_pixel(rf) -> Fraction:
    """Input pixels per pixel of the grid a field was last resampled from: ``stride * period``.
    Without upsampling that is the stride; after a x2 upsample of a stride-4 map, 4."""
    return Fraction(rf.stride) * getattr(rf, "period", 1)


def tolerance(rf_a, rf_b) -> Fraction:
    """Offsets below one pixel of the coarser grid are the resampling's phase, not a bug."""
    return max(Fraction(MIN_OFFSET), coarse_pixel(rf_a), coarse_pixel(rf_b))


def mean_centre(rf) -> Fraction | None:
    """Centre of unit j's receptive field minus ``j * stride``, averaged over one period of
    units (the receptive-field pass's ``center_offset``); None when some unit of the period
    reads no input pixel at all (a transposed conv with kernel < stride), so it has no centre.

    Over a period, the mean of the units' span midpoints equals the mean of their true
    (gradient-weighted) centres for nearest and bilinear resampling (tests/test_pitfall_rules.py
    checks it against the gradient).
    """
    if any(span is None for span in getattr(rf, "phases", ())):
        return None
    return Fraction(rf.center_offset)


def offset_at(rf_a, rf_b, j: int) -> Fraction | None:
    """Signed distance, in input pixels, from branch a's mean centre of unit j to branch b's."""
    a, b = mean_centre(rf_a), mean_centre(rf_b)
    if a is None or b is None:
        return None
    return (Fraction(rf_b.stride) - Fraction(rf_a.stride)) * j + (b - a)


def max_offset(rf_a, rf_b, size: int) -> Fraction | None:
    """Largest distance between the two branches' centres over the map's units 0..size-1.

    The mean centres are affine in the unit index (``j * stride + center_offset``), so their
    distance is largest at one end of the map: the cost does not depend on the map's size.
    """
    ends = [offset_at(rf_a, rf_b, j) for j in {0, max(int(size) - 1, 0)}]
    if any(end is None for end in ends):
        return None
    return max(abs(end) for end in ends)


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
            if any(gap is None for gap in gaps):
                continue
            if all(gap < tolerance(a, b) for gap, a, b in zip(gaps, ref_rf, rf)):
                continue
            yield ctx.finding(
                merge,
                _message(g, merge, size, reference, ref_rf, other, rf, gaps),
                fix=_crop_fix(g, reference, ref_rf, rf) or _crop_fix(g, other, rf, ref_rf)
                or "keep pixel centres on both branches: crop the centre ((a - b) / 2 from each "
                "side) rather than a corner, pad symmetrically ((k - 1) / 2 with odd kernels), "
                "and give both branches the same overall stride",
                related=[g.nodes[reference]["location"], g.nodes[other]["location"]],
            )
            break


def _positional_branches(g, merge: str) -> list[str]:
    """The merge's operands that carry a map with positions: not a size-1 broadcast, not
    computed from globally pooled data only (``rf_global``: SE gates, ASPP image pooling)."""
    found = []
    for operand in dict.fromkeys(g.nodes[merge]["inputs"]):
        size = spatial_out(g, operand)
        if size is None or all(s == 1 for s in size) or g.nodes[operand].get("rf_global"):
            continue
        found.append(operand)
    return found


def _crop_fix(g, branch: str, own_rf, target_rf) -> str | None:
    """For a branch that is a crop (slice), the crop that puts its centres on the other's."""
    node = g.nodes[branch]
    slices = node["attrs"].slices
    if node["op"] != "slice" or not slices or len(slices) != len(own_rf):
        return None
    bounds = []
    for (start, stop, step), own, target in zip(slices, own_rf, target_rf):
        if own.stride != target.stride or step != 1:
            return None
        offset = Fraction(target.center_offset) - Fraction(own.center_offset)
        shift = offset / Fraction(own.stride)
        if shift.denominator != 1:
            return None
        start = (start or 0) + int(shift)
        stop = None if stop is None else stop + int(shift)
        bounds.append(f"{start}:{'' if stop is None else stop}")
    return (
        f"crop the centre, not a corner: [..., {', '.join(bounds)}] (shifted by the offset) "
        "puts both branches over the same input pixels"
    )


def _message(g, merge, size, reference, ref_rf, other, rf, gaps) -> str:
    def place(r) -> str:
        stride, start = Fraction(r.stride), Fraction(r.center_offset)
        term = f"{_num(stride)}i" if stride != 1 else "i"
        return f"{term} + {_num(start)}" if start >= 0 else f"{term} - {_num(-start)}"

    axes = ["H", "W"] if len(size) == 2 else [f"axis {i}" for i in range(len(size))]
    per_axis: dict[str, list[str]] = {}
    for axis, a, b, gap in zip(axes, ref_rf, rf, gaps):
        if gap > 0:
            apart = f"{_num(gap)} px apart" if a.stride == b.stride else f"up to {_num(gap)} px apart"
            text = (f"{producer_name(g, reference)} at {place(a)}, {producer_name(g, other)} at "
                    f"{place(b)}, {apart}")
            per_axis.setdefault(text, []).append(axis)
    detail = "; ".join(f"{' and '.join(names)}: {text}" for text, names in per_axis.items())
    return (
        f"the branches merged at {merge_name(g, merge)} are both {fmt_size(size)}, but pixel i "
        f"of each is centred over different input pixels ({detail}; positions in input pixels, "
        "averaged over the upsampling phase)"
    )


def _num(value: Fraction) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
