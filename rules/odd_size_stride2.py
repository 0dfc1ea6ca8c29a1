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

On a model with a spatial output (segmentation, encoder-decoder) that gives the input size back
somewhere, the finding reads the sizes pass's `same_size` (the sizes at which the output's
spatial size equals the input's, from the exact engine): it says whether the output still has the
input size at the example and at which sizes it keeps it, and the size its fix proposes is one
where this layer does not round *and* the output keeps the input size.

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

from fractions import Fraction

import numpy as np

from archlint.graph import spatial
from archlint.passes.merge_mismatch import breaks_merge
from archlint.passes.strided_rounding import Rounding, rounding_at, rounding_nodes
from archlint.rule import rule
from archlint_rules._topology import size_sweep, sizes_note, where


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
    for name in rounding_nodes(g) if g is not None else ():  # the strided ops that round
        found = rounding_at(g, name)
        node = ctx.node(name)
        kernel = "x".join(str(w.kernel) for w in found.windows)
        stride = "x".join(str(w.stride) for w in found.windows)
        message = f"{node['origin'] or node['op']} (kernel {kernel}, stride {stride}) rounds: {found.describe()}"
        severity = None
        broken = breaks_merge(g, name)
        if broken is not None:
            origin = g.nodes[broken]["origin"] or g.nodes[broken]["op"]
            message += f"; this breaks the {origin} at {where(g, broken)} (skip-connection-mismatch)"
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
        same = _keeps_input_size(sweep, fires)
        note = sizes_note(sweep, fires, defined)
        if same is not None:
            message = _ground_in_same_size(message, found, sweep, same)
            note = _same_size_note(note, sweep, same)
        yield ctx.finding(
            name,
            message,
            fix=_fix(g, name, found, sweep, fires, same),
            severity=severity,
            sizes=note,
        )


def _keeps_input_size(sweep, fires):
    """The sizes where the model runs and its output has the input's spatial size (the sizes
    pass's ``same_size``, from the exact engine), when the model gives the input size back
    somewhere this layer does not round; None for a model that never does (an encoder or a
    classifier: the statement is about this layer alone then)."""
    sym = getattr(sweep, "symbolic", None) if sweep is not None else None
    if sym is None or getattr(sym, "same_size", None) is None or fires is None:
        return None
    same = np.asarray(sym.same_size["square"], dtype=bool) & np.asarray(sweep.admissible, dtype=bool)
    if len(same) != len(fires) or not (same & ~np.asarray(fires, dtype=bool)).any():
        return None
    return same


def _ground_in_same_size(message: str, found: Rounding, sweep, same) -> str:
    """What the rounding does to the model's output at the example, from ``same_size``."""
    n = None  # the model input's side, not this layer's input
    example = getattr(sweep, "example", None)
    if example and len(set(example)) == 1 and sweep.lo <= example[0] <= sweep.hi:
        n = example[0]
    shown = f"{n}x{n}" if n is not None else "the example"
    where = f"H = W in {sweep.describe(same)}"
    if n is not None and same[n - sweep.lo]:
        tail = f"; the model's output still has the input size at {shown} (it keeps it at {where})"
        return message.replace("; the windows stay symmetric, but an x"
                               f"{found.windows[found.axes[0]].stride} upsample will not give the "
                               "size back", "; the windows stay symmetric") + tail
    if n is not None and not sweep.admissible[n - sweep.lo]:
        return message + f"; the output keeps the input size only at {where}"
    return message + f"; the output size differs from the input at {shown} (it keeps it only at {where})"


def _same_size_note(note, sweep, same):
    if note is None:
        return None
    if (same == np.asarray(sweep.admissible, dtype=bool)).all():
        return note + "; the output keeps the input size wherever the model runs"
    return note + f"; the output keeps the input size at H = W in {sweep.describe(same)}"


def _fix(g, name: str, found: Rounding, sweep, fires, same=None) -> str:
    cumulative = _cumulative_stride(g, name, found)
    advice = (
        f"feed input sizes divisible by {cumulative} (the cumulative stride up to here)"
        if cumulative
        else "feed an input size that the strides divide"
    )
    if sweep is not None and fires is not None:
        example = _example_side(g)
        nearest = _nearest_clean(sweep, fires, example, same)
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


def _nearest_clean(sweep, fires, n: int | None, same=None) -> int | None:
    """The size nearest n where this layer does not round, the model runs and, for a model that
    gives its input size back, its output has the input's size."""
    if n is None:
        return None
    sizes = np.asarray(sweep.sizes)
    admissible = getattr(sweep, "admissible", None)
    ok = ~np.asarray(fires, dtype=bool)
    if admissible is not None:
        ok &= np.asarray(admissible, dtype=bool)
    if same is not None:
        ok &= same
    candidates = sizes[ok]
    if candidates.size == 0:
        return None
    order = np.lexsort((candidates, np.abs(candidates - n)))
    return int(candidates[order[0]])
