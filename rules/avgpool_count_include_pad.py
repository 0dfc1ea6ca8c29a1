"""
## What it does
Flags a padded average pooling layer that counts the padding zeros in its divisor
(`count_include_pad=True`, PyTorch's default), and says how much that dims the border: a 3x3 pool
with `padding=1` divides the corner's 4 real pixels by 9.

## Why is this bad?
The zeros pull every border output towards zero, so the map is darker at its edges than inside
(a corner at 4/9 = 44% of its true mean, an edge at 6/9). The next layers see a border artefact
that depends on the padding rather than the image. Often intended as "the same as
`count_include_pad=False`"; it is not.

## Example
```python
self.pool = nn.AvgPool2d(3, stride=1, padding=1)    # count_include_pad=True by default
```

## Use instead
```python
self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
```
`archlint --fix` makes this edit (a safe fix).

## References
- PyTorch docs, `nn.AvgPool2d`: `count_include_pad`.
- ONNX operator docs, `AveragePool`: `count_include_pad` (default 0).
"""

from __future__ import annotations

from fractions import Fraction

from archlint.fixes import Applicability, call_fix
from archlint.rule import rule
from archlint_rules._topology import fmt_size, spatial_in, windows


#: ``--fix`` passes count_include_pad=False at the pool's construction call. Safe: no shape and no
#: parameter changes; only the border values, which the PyTorch docs' option exists to correct.
FIX_APPLICABILITY = Applicability.SAFE


def first_window_share(n: int, kernel: int, pad_begin: int) -> Fraction:
    """Share of the first window (along one axis) that lies on real pixels."""
    real = min(kernel - pad_begin, n)
    return Fraction(max(real, 0), kernel)


@rule(
    id="avgpool-count-include-pad",
    code="AL207",
    severity="info",
    summary="padded average pooling counts padding zeros and dims the border",
)
def avgpool_count_include_pad(ctx):
    g = ctx.graph
    for name in ctx.nodes("avg_pool"):
        attrs = ctx.node(name)["attrs"]
        axes = windows(attrs)
        if not axes or not attrs.count_include_pad:
            continue
        if all(pb == 0 and pe == 0 for *_, (pb, pe) in axes):
            continue
        size_in = spatial_in(g, name) or tuple(k for k, *_ in axes)
        shares = [first_window_share(n, k, pb) for n, (k, _, _, (pb, _)) in zip(size_in, axes)]
        corner = Fraction(1)
        for share in shares:
            corner *= share
        window = 1
        for k, *_ in axes:
            window *= k
        real = corner * window
        padding = fmt_size([pb for *_, (pb, _) in axes])
        yield ctx.finding(
            name,
            f"{fmt_size([k for k, *_ in axes])} average pool with padding {padding} counts the "
            f"padding zeros: its corner output averages {real} real pixels over {window} "
            f"(x{float(corner):.2f}), so the border is dimmed",
            fix="pass count_include_pad=False to divide by the real pixels only",
            autofix=call_fix(ctx.node(name), {"count_include_pad": False}, FIX_APPLICABILITY),
        )
