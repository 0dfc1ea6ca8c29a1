"""
## What it does
Flags a stride-1 convolution with an even kernel and symmetric padding meant to keep the size
(`padding = kernel_size / 2` or `kernel_size / 2 - 1`): no symmetric padding can keep the size of
an even kernel, so the map grows or shrinks by one pixel per axis. It stays quiet on
`padding='same'`, which PyTorch pads asymmetrically for you. A shrinking conv is reported only
where the layers around it keep the size (or its output is merged with a branch of its input
size): deliberate `valid`-style stacks such as PatchGAN heads shrink on purpose.

## Why is this bad?
A 4x4 kernel spans 3 pixels beyond its anchor: keeping the size needs 3 pixels of padding, split
1 + 2. `padding=2` pads 4 and the map grows from 64 to 65; `padding=1` pads 2 and it shrinks to
63. The off-by-one then breaks skip connections, or quietly shifts every feature by half a pixel.

## Example
```python
self.conv = nn.Conv2d(64, 64, kernel_size=4, padding=2)   # 64x64 -> 65x65
```

## Use instead
```python
self.conv = nn.Conv2d(64, 64, kernel_size=3, padding=1)          # odd kernel
self.conv = nn.Conv2d(64, 64, kernel_size=4, padding="same")     # PyTorch pads 1 + 2
# or keep padding=0 and pad explicitly: F.pad(x, (1, 2, 1, 2))
```
`archlint --fix --unsafe-fixes` makes the first edit (unsafe: the weights change shape).

## References
- PyTorch docs, `nn.Conv2d`: `padding='same'` pads asymmetrically when the total is odd.
- TensorFlow docs, "SAME" padding: the extra pixel goes at the end.
"""

from __future__ import annotations

from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule
from archlint_rules._topology import (
    fmt_axes,
    fmt_size,
    kernel_extent,
    layer_name,
    merge_partners_at_size,
    neighbours_keep_size,
    spatial_in,
    spatial_out,
    windows,
)


def size_change(kernel: int, dilation: int, pad_begin: int, pad_end: int) -> int | None:
    """+1/-1 when a symmetric padding of an even span misses 'same' by one pixel, else None."""
    span = kernel_extent(kernel, dilation) - 1  # pixels the window needs beyond its anchor
    if span % 2 == 0 or pad_begin != pad_end or pad_begin == 0:
        return None
    change = 2 * pad_begin - span
    return change if change in (1, -1) else None


#: ``--fix --unsafe-fixes`` sets the odd kernel (one tap more if the map grows, one less if it
#: shrinks) and its symmetric padding at the conv's construction call. Unsafe: the weight tensor
#: changes shape (a checkpoint no longer loads) and the output size changes.
FIX_APPLICABILITY = Applicability.UNSAFE


@rule(
    id="even-kernel-same-padding",
    code="AL205",
    severity="warning",
    summary="even-kernel stride-1 conv with symmetric padding: the map grows or shrinks by one",
)
def even_kernel_same_padding(ctx):
    g = ctx.graph
    for name in ctx.nodes_where(_misses_same_by_one, "conv"):
        axes = windows(ctx.node(name)["attrs"])
        changes = [size_change(k, d, pb, pe) for k, _, d, (pb, pe) in axes]
        size_in, size_out = spatial_in(g, name), spatial_out(g, name)
        if size_in is None:
            continue
        if all(c is None or c < 0 for c in changes):
            # Shrinking by one is how valid-style stacks are built; flag it only in context.
            keepers = neighbours_keep_size(g, name)
            merges = merge_partners_at_size(g, name, size_in)
            if not keepers and not merges:
                continue
            context = [*keepers, *merges]
        else:
            context = []
        kernel = fmt_size([k for k, *_ in axes])
        padding = fmt_axes([pb for *_, (pb, _) in axes])
        verbs = sorted({"grows" if c > 0 else "shrinks" for c in changes if c is not None})
        change = f"{fmt_size(size_in)} -> {fmt_size(size_out)}" if size_out else ""
        message = (
            f"{kernel} conv (even kernel) with symmetric padding {padding} "
            f"{' and '.join(verbs)} the map by one pixel per axis ({change}): "
            "no symmetric padding keeps an even kernel's size"
        )
        if context:
            names = ", ".join(layer_name(g, n) for n in context)
            message += f"; its neighbours ({names}) keep the size"
        yield ctx.finding(
            name,
            message,
            fix=_fix(axes, changes),
            autofix=_autofix(ctx.node(name), axes, changes),
            related=[g.nodes[n]["location"] for n in context],
        )


def _misses_same_by_one(attrs) -> bool:
    """A stride-1 conv with explicit padding that misses 'same' by one pixel on some axis."""
    axes = windows(attrs)
    if not axes or attrs.auto_pad or any(s != 1 for _, s, _, _ in axes):
        return False
    return any(size_change(k, d, pb, pe) is not None for k, _, d, (pb, pe) in axes)


def _odd_kernel(axes, changes) -> tuple[list[int], list[int]]:
    """Per axis, the odd kernel that keeps the size and its symmetric padding."""
    # Growing by one: one tap more keeps the padding right; shrinking: one tap less.
    odd = [k if c is None else k + 1 if c > 0 else k - 1 for (k, *_), c in zip(axes, changes)]
    return odd, [(kernel_extent(k, d) - 1) // 2 for k, (_, _, d, _) in zip(odd, axes)]


def _autofix(node, axes, changes):
    odd, odd_pad = _odd_kernel(axes, changes)
    return call_fix(node, {"kernel_size": per_axis(odd), "padding": per_axis(odd_pad)},
                    FIX_APPLICABILITY, reads=("dilation",))


def _fix(axes, changes) -> str:
    odd, odd_pad = _odd_kernel(axes, changes)
    pairs = []
    for k, _, d, _ in reversed(axes):  # F.pad lists the last axis first
        span = kernel_extent(k, d) - 1
        pairs += [span // 2, span - span // 2]
    return (
        f"use an odd kernel (kernel_size={fmt_axes(odd)}, padding={fmt_axes(odd_pad)}), or keep "
        f"the kernel with padding='same' (PyTorch pads asymmetrically), or padding=0 after "
        f"F.pad(x, {tuple(pairs)})"
    )
