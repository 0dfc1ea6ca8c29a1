"""
## What it does
Flags a strided convolution or pooling layer (stride `s > 1`) whose input size on some axis is
not divisible by `s` at the example input, where the window arithmetic really rounds:

- a *halving* layer (one whose output is exactly `n / s` whenever `s` divides `n`: its total
  padding `P` satisfies `k_eff - s <= P <= k_eff - 1`, e.g. 3x3/s2/p1, 2x2/s2, 1x1/s2) fires on
  every `n % s != 0`, because its output is then `ceil(n / s)` or `floor(n / s)`, never `n / s`;
- any other strided layer (a "valid" window such as AlexNet's 3x3/s2 max pool) fires only when
  `n % s != 0` *and* its last window stops short of the last input row (floor mode) or hangs over
  the border (ceil mode). Where the windows tile the input exactly nothing is rounded, and it
  stays quiet (55 -> 27 through a 3x3/s2 pool is exact).

Nothing fed a size that `s` divides ever fires. When the rounding keeps the sampling grid
symmetric (the first and last windows sit the same distance from their border, e.g. 3x3/s2/p1 on
57, the "n = k*s + 1" sizes DeepLab uses) the finding is info, unless the rounding is the cause
of a skip-connection-mismatch downstream; otherwise it is a warning.

## Why is this bad?
A stride-2 layer maps both 56 and 57 to 28 or 29, so no decoder can know which size to give
back: an encoder-decoder fed 57x57 halves to 29x29, upsamples to 58x58, and the skip
connection no longer fits. A layer that rounds down also silently drops the last row and column,
so the bottom/right border is seen less than the top/left one.

## Example
```python
self.down = nn.Conv2d(64, 128, 3, stride=2, padding=1)   # fed 57x57: 57 -> 29 (28.5)
self.pool = nn.MaxPool2d(2)                               # fed 57x57: 57 -> 28, row 56 dropped
```

## Use instead
Feed input sizes that are a multiple of the cumulative stride up to that layer (the finding
lists them), or pad/crop the map to such a size first; in a decoder, size the upsampled map
from its skip (`self.up(x, output_size=skip.shape[2:])` or
`F.interpolate(x, size=skip.shape[2:])`).

## References
- PyTorch docs, `nn.Conv2d` / `nn.MaxPool2d`: output size
  `floor((n + 2p - d(k-1) - 1) / s) + 1`, and the `ceil_mode` last-window rule.
- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, section 2.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from archlint.graph import output_shape, spatial
from archlint.rule import rule
from archlint_rules._topology import Window, decimal, size_sweep, sizes_note, windows_of

STRIDED_OPS = ("conv", "max_pool", "avg_pool", "lp_pool")
AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


@dataclass(frozen=True)
class Rounding:
    """Where a strided layer rounds at the example input, per offending axis."""

    node: str
    axes: tuple[int, ...]  # spatial axis indices that round
    size_in: tuple[int, ...]
    size_out: tuple[int, ...]
    windows: tuple[Window, ...]
    symmetric: bool

    def describe(self) -> str:
        """'57 -> 29 (57/2 = 28.5, rounded up)' per offending axis, axes named when they differ."""
        names = AXIS_NAMES.get(len(self.size_in), tuple(f"axis {i}" for i in range(len(self.size_in))))
        parts = []
        for i in self.axes:
            n, out, s = self.size_in[i], self.size_out[i], self.windows[i].stride
            exact = Fraction(n, s)
            way = "rounded up" if out > exact else "rounded down"
            parts.append((names[i], f"{n} -> {out} ({n}/{s} = {decimal(exact)}, {way})"))
        if len({text for _, text in parts}) == 1:
            axes = " and ".join(name for name, _ in parts)
            return f"{axes} {parts[0][1]}" if len(parts) > 1 else f"{parts[0][0]} {parts[0][1]}"
        return "; ".join(f"{name} {text}" for name, text in parts)


def rounding_at(g, name: str) -> Rounding | None:
    """The rounding a strided conv/pool does at the example input, or None if it does not."""
    node = g.nodes[name]
    if node["op"] not in STRIDED_OPS or not node["inputs"]:
        return None
    wins = windows_of(node["attrs"])
    size_in = spatial(output_shape(g, node["inputs"][0]))
    size_out = spatial(output_shape(g, name))
    if not wins or size_in is None or size_out is None or len(size_in) != len(wins):
        return None
    axes = tuple(i for i, (w, n) in enumerate(zip(wins, size_in)) if w.stride > 1 and w.rounds(n))
    if not axes:
        return None
    symmetric = all(wins[i].symmetric(size_in[i], size_out[i]) for i in axes)
    return Rounding(name, axes, tuple(size_in), tuple(size_out), tuple(wins), symmetric)


def _input_arrays(sweep, producer: str):
    try:
        arrays = sweep.spatial(producer)
    except (KeyError, ValueError):
        return None
    return None if arrays is None else [np.asarray(a, dtype=np.int64) for a in arrays]


@rule(
    id="odd-size-stride2",
    code="AL104",
    severity="warning",
    summary="strided conv/pool fed a size its stride does not divide: the output size is rounded",
)
def odd_size_stride2(ctx):
    g = ctx.graph
    sweep = size_sweep(g)
    causes = None
    for name in ctx.nodes(*STRIDED_OPS):
        found = rounding_at(g, name)
        if found is None:
            continue
        if causes is None:
            from archlint_rules._merge_mismatch import root_causes

            causes = root_causes(g)
        node = ctx.node(name)
        kernel = "x".join(str(w.kernel) for w in found.windows)
        stride = "x".join(str(w.stride) for w in found.windows)
        message = f"{node['origin'] or node['op']} (kernel {kernel}, stride {stride}) rounds: {found.describe()}"
        severity = None
        if name in causes:
            message += f"; this breaks {causes[name]} (skip-connection-mismatch)"
        elif found.symmetric:
            severity = "info"
            message += (
                "; the windows stay symmetric, but an x"
                f"{found.windows[found.axes[0]].stride} upsample will not give the size back"
            )
        else:
            message += "; the last row/column is treated differently from the first"
        fires = defined = None
        arrays = _input_arrays(sweep, node["inputs"][0]) if sweep is not None else None
        if arrays is not None and len(arrays) == len(found.windows):
            fires = np.zeros_like(arrays[0], dtype=bool)
            for w, n in zip(found.windows, arrays):
                if w.stride > 1:
                    fires |= w.rounds(n)
            defined = np.all([a > 0 for a in arrays], axis=0)
        note = sizes_note(sweep, fires, defined)
        yield ctx.finding(
            name,
            message,
            fix=_fix(g, name, found, sweep, fires),
            severity=severity,
            sizes=note,
        )


def _fix(g, name: str, found: Rounding, sweep, fires) -> str:
    cumulative = _cumulative_stride(g, name, found)
    advice = (
        f"feed input sizes divisible by {cumulative} (the cumulative stride up to here)"
        if cumulative
        else "feed an input size that the strides divide"
    )
    if sweep is not None and fires is not None:
        example = _example_side(g)
        nearest = _nearest_clean(sweep, fires, example)
        if nearest is not None and example is not None:
            advice += f", e.g. {nearest}x{nearest} instead of {example}x{example}"
    return (
        f"{advice}; or pad/crop the map to a multiple of the stride before this layer, and in a "
        "decoder size the upsampled map from its skip (output_size=skip.shape[2:] or "
        "F.interpolate(x, size=skip.shape[2:]))"
    )


def _cumulative_stride(g, name: str, found: Rounding) -> int | None:
    """Effective stride of this layer's output along the first rounding axis (from the rf facts)."""
    rf = g.nodes[name].get("rf")
    if not rf or found.axes[0] >= len(rf) or rf[found.axes[0]] is None:
        return None
    stride = Fraction(rf[found.axes[0]].stride)
    return int(stride) if stride.denominator == 1 and stride > 1 else None


def _example_side(g) -> int | None:
    shapes = g.graph.get("input_shapes") or []
    sides = spatial(tuple(shapes[0])) if shapes else None
    return sides[0] if sides and len(set(sides)) == 1 else None


def _nearest_clean(sweep, fires, n: int | None) -> int | None:
    if n is None:
        return None
    sizes = np.asarray(sweep.sizes)
    admissible = getattr(sweep, "admissible", None)
    ok = ~np.asarray(fires, dtype=bool)
    if admissible is not None:
        ok &= np.asarray(admissible, dtype=bool)
    candidates = sizes[ok]
    if candidates.size == 0:
        return None
    order = np.lexsort((candidates, np.abs(candidates - n)))
    return int(candidates[order[0]])
