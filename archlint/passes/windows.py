"""One spatial axis of a sliding window (conv, pool) in PyTorch's terms, read from a node's attrs.

Shared by the passes that judge window geometry (:mod:`archlint.passes.strided_rounding`,
:mod:`archlint.passes.collapse`) and by the rules (through ``archlint_rules._topology``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One spatial axis of a sliding window, in PyTorch's terms."""

    kernel: int
    stride: int
    dilation: int = 1
    pad_begin: int = 0
    pad_end: int = 0
    ceil_mode: bool = False

    @property
    def extent(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    @property
    def total_pad(self) -> int:
        return self.pad_begin + self.pad_end

    @property
    def halving(self) -> bool:
        """True when the output is exactly n / s for every n that s divides."""
        return self.extent - self.stride <= self.total_pad <= self.extent - 1

    def output(self, n):
        """Output size for input size(s) n (ints or an int array); <= 0 where undefined."""
        n = np.asarray(n, dtype=np.int64)
        span = n + self.total_pad - self.extent
        if self.ceil_mode:
            out = -((-span) // self.stride) + 1
            # PyTorch/ONNX: the last window must start inside the input or the begin padding.
            out = out - ((out - 1) * self.stride >= n + self.pad_begin)
        else:
            out = span // self.stride + 1
        return np.where((out >= 1) & (n > 0), out, 0)

    def rounds(self, n):
        """The documented criterion (see the rule docs), element-wise over input sizes n."""
        n = np.asarray(n, dtype=np.int64)
        indivisible = (n > 0) & (n % self.stride != 0)
        if self.halving:
            return indivisible
        out = self.output(n)
        last_end = (out - 1) * self.stride + self.extent  # padded coordinates, exclusive
        dropped = self.pad_begin + n - last_end > 0
        overhang = last_end - (n + self.total_pad) > 0
        return indivisible & (out > 0) & (dropped | overhang)

    def symmetric(self, n: int, out: int) -> bool:
        """True when the first and last windows sit the same distance from their borders."""
        return (out - 1) * self.stride == n + 2 * self.pad_begin - self.extent


def windows_of(attrs) -> list[Window]:
    """Per spatial axis Window of a conv/pool node's attrs ([] when the frontend gave no kernel)."""
    # Attrs records are frozen and a large graph shares a few (one per distinct conv): the
    # windows once per record, kept with it so its id is not reused while cached
    cached = _WINDOWS.get(id(attrs))
    if cached is None or cached[0] is not attrs:
        if len(_WINDOWS) > 4096:  # bounded: entries keep their records alive
            _WINDOWS.clear()
        cached = _WINDOWS[id(attrs)] = (attrs, _windows(attrs))
    return list(cached[1])


_WINDOWS: dict[int, tuple[object, list[Window]]] = {}


def _windows(attrs) -> list[Window]:
    axes = len(attrs.kernel)
    stride = attrs.stride or (1,) * axes
    dilation = attrs.dilation or (1,) * axes
    padding = attrs.padding or ((0, 0),) * axes
    return [
        Window(k, s, d, pb, pe, bool(attrs.ceil_mode))
        for k, s, d, (pb, pe) in zip(attrs.kernel, stride, dilation, padding)
    ]
