"""
## What it does
Flags a transposed convolution whose kernel does not spread evenly over its stride: some output
positions receive more kernel taps than their neighbours. It computes the exact overlap pattern
over one stride period (output position `o` gets one tap for each `j` in `[0, k)` with
`(o + padding - j * dilation) % stride == 0`), so `kernel_size=3, stride=2` gives `2,1`
alternating, and `kernel_size=4, stride=2` or `kernel_size=2, stride=2` gives an even pattern and
is not reported. When some positions receive no tap at all (a kernel smaller than its stride, or
a dilation that skips a phase) the output has holes, and the finding is an error.

## Why is this bad?
Uneven overlap paints a periodic "checkerboard" over every image the layer produces (Odena et al.,
2016). The network can learn to hide it only by spending capacity on it, and in practice it
rarely does fully: GAN and super-resolution outputs show the grid. Positions with zero taps get
only the bias, whatever the input.

## Example
```python
self.up = nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2, padding=1, output_padding=1)
```

## Use instead
```python
self.up = nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1)   # k = 2s, p = s/2
# or resize, then convolve:
self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(64, 32, 3, padding=1))
```
`archlint --fix --unsafe-fixes` makes the first edit with the output size kept (unsafe: the
weights change shape).

## References
- Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill, 2016.
- Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, section 4.
"""

from __future__ import annotations

from archlint.graph import output_shape, spatial
from archlint.fixes import Applicability, call_fix, per_axis
from archlint.rule import rule


def overlap_pattern(kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> tuple[int, ...]:
    """Kernel taps landing on output positions 0..stride-1 (away from the borders).

    >>> overlap_pattern(3, 2)
    (2, 1)
    >>> overlap_pattern(4, 2, padding=1)
    (2, 2)
    """
    return tuple(
        sum(1 for j in range(kernel) if (o + padding - j * dilation) % stride == 0)
        for o in range(stride)
    )


def _axes_of(attrs) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, dilation, pad_begin, output_padding) per spatial axis."""
    axes = len(attrs.kernel)
    stride = attrs.stride or (1,) * axes
    dilation = attrs.dilation or (1,) * axes
    padding = attrs.padding or ((0, 0),) * axes
    out_pad = attrs.output_padding or (0,) * axes
    return [(k, s, d, pb, op) for k, s, d, (pb, _), op in zip(attrs.kernel, stride, dilation, padding, out_pad)]


#: ``--fix --unsafe-fixes`` sets an even-overlap kernel_size, padding and output_padding (the
#: same output size at the example input) at the layer's construction call. Unsafe: the weights
#: change shape.
FIX_APPLICABILITY = Applicability.UNSAFE


@rule(
    id="kernel-stride-checkerboard",
    code="AL102",
    severity="warning",
    summary="transposed conv whose kernel size is not a multiple of its stride (checkerboard)",
)
def kernel_stride_checkerboard(ctx):
    for name in ctx.nodes("conv_transpose"):
        node = ctx.node(name)
        axes = _axes_of(node["attrs"])
        if not axes:
            continue
        patterns = [overlap_pattern(k, s, pb, d) for k, s, d, pb, _ in axes]
        if all(len(set(p)) == 1 for p in patterns):
            continue
        holes = any(0 in p for p in patterns)
        yield ctx.finding(
            name,
            _message(node, axes, patterns, holes),
            fix=_fix(ctx.graph, name, axes),
            autofix=_autofix(ctx.graph, name, axes),
            severity="error" if holes else None,
        )


def _message(node, axes, patterns, holes) -> str:
    kernel = _fmt([k for k, *_ in axes])
    stride = _fmt([s for _, s, *_ in axes])
    described = [",".join(map(str, p)) for p in patterns]
    if len(set(described)) == 1:
        pattern = f"taps per output position repeat {described[0]} along every axis"
    else:
        pattern = "taps per output position repeat " + "; ".join(
            f"{d} along axis {i}" for i, d in enumerate(described)
        )
    product = _grid_range(patterns)
    text = (
        f"{node['origin'] or 'transposed conv'} with kernel_size={kernel}, stride={stride}: "
        f"{pattern}"
    )
    if product is not None:
        text += f" (from {product[0]} to {product[1]} taps per pixel in the grid)"
    if holes:
        text += "; positions with 0 taps get only the bias, whatever the input"
    else:
        text += ": uneven overlap paints a checkerboard"
    return text


def _grid_range(patterns) -> tuple[int, int] | None:
    if len(patterns) < 2:
        return None
    low = high = 1
    for p in patterns:
        low *= min(p)
        high *= max(p)
    return low, high


RESIZE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _even_axes(g, name: str, axes):
    """Per axis, the even-overlap (kernel, padding, output_padding), None where none is found."""
    inputs = g.nodes[name]["inputs"]
    size_in = spatial(output_shape(g, inputs[0])) if inputs else None
    size_out = spatial(output_shape(g, name))
    unknown = [None] * len(axes)
    return [
        _even_geometry(k, s, d, pb, op, n, out)
        for (k, s, d, pb, op), n, out in zip(axes, size_in or unknown, size_out or unknown)
    ]


def _autofix(g, name: str, axes):
    even = _even_axes(g, name, axes)
    if any(e is None for e in even) or spatial(output_shape(g, name)) is None:
        return None  # without the sizes, the output size is not known to stay
    kernel, padding, out_pad = zip(*even)
    arguments = {"kernel_size": per_axis(kernel), "padding": per_axis(padding)}
    if any(out_pad) or any(op for *_, op in axes):
        arguments["output_padding"] = per_axis(out_pad)
    if any(d != 1 for _, _, d, _, _ in axes):
        arguments["dilation"] = 1  # the even geometry is for adjacent taps
    return call_fix(g.nodes[name], arguments, FIX_APPLICABILITY, reads=("stride",))


def _fix(g, name: str, axes) -> str:
    size_out = spatial(output_shape(g, name))
    even = _even_axes(g, name, axes)
    strides = [s for _, s, *_ in axes]
    mode = RESIZE_MODES.get(len(axes), "nearest")
    resize = (
        f"or nn.Upsample(scale_factor={_arg(strides)}, mode='{mode}') followed by a "
        f"{'x'.join(['3'] * len(axes))} conv (padding=1)"
    )
    if any(e is None for e in even):
        return f"use a kernel_size that is a multiple of the stride (e.g. 2 * stride), {resize}"
    kernel, padding, out_pad = zip(*even)
    text = f"use kernel_size={_arg(kernel)}, stride={_arg(strides)}, padding={_arg(padding)}"
    if any(out_pad):
        text += f", output_padding={_arg(out_pad)}"
    if any(d != 1 for _, _, d, _, _ in axes):
        text += ", dilation=1"
    if size_out is not None:
        text += f" (same {'x'.join(map(str, size_out))} output)"
    return f"{text}, {resize}"


def _even_geometry(k, s, d, pb, op, n, out):
    """An even-overlap (kernel, padding, output_padding) for this axis. With the example sizes
    known, the first of k = 2s, s, 3s (smallest padding first) that gives the same output size;
    else k = 2s, p = s/2 (s even) or k = s, p = 0."""
    if n is None or out is None:
        return (2 * s, s // 2, 0) if s % 2 == 0 else (s, 0, 0)
    for kernel in (2 * s, s, 3 * s):
        for padding in range(kernel):
            out_pad = out - ((n - 1) * s - 2 * padding + kernel)
            if 0 <= out_pad < s and len(set(overlap_pattern(kernel, s, padding))) == 1:
                return kernel, padding, out_pad
    return None


def _fmt(values) -> str:
    """'3' when every axis agrees, else '3x5', for messages."""
    values = list(values)
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _arg(values) -> str:
    """How PyTorch takes it: '4' when every axis agrees, else '(4, 6)'."""
    values = list(values)
    return str(values[0]) if len(set(values)) == 1 else "(" + ", ".join(map(str, values)) + ")"
