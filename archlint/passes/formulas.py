"""Exact per-op output-size formulas, one spatial axis at a time.

Every formula is plain integer arithmetic (``//``, comparisons, ``|``/``&``), so the same code
runs on a Python ``int`` and, element-wise, on a numpy ``int64`` array of sizes: the input-size
sweep (:mod:`archlint.passes.sizes`) evaluates all sizes at once through it.

Public API
----------
``axis_size(op, attrs, axis, n, *, ref=None, semantics="torch") -> (out, invalid)``
    Output size of one spatial axis of a single-input spatial op, and where that op raises
    (a bool, or a bool array for an array ``n``). An output that is the same at every input
    size (adaptive/global pooling, a fixed resize target) comes back as a plain int even for
    an array ``n``: the sweep relies on that to tell a designed 1x1 broadcast from an accident. ``ref`` is the reference size for an
    ``upsample`` with ``attrs.size_from``.
``always_invalid(op, attrs, semantics="torch") -> str | None``
    The reason an op raises at *every* input size (pool padding above half the kernel,
    transposed-conv output_padding too large), else None.
``infer_spatial(op, attrs, input_spatial, *, semantics="torch") -> tuple[int, ...]``
    The scalar entry point (ONNX shape-inference gaps): output spatial sizes from the inputs'
    spatial sizes (one tuple per input, in argument order; an ``upsample`` with ``size_from``
    reads the reference size from the second entry). Raises :class:`ShapeError` with a one-line
    reason when the op is invalid at that size, and :class:`UnsupportedOp` for an op whose
    spatial output is not a function of its inputs' spatial sizes (``reshape``, ``unknown``,
    a flatten that keeps spatial axes).
Scalar helpers (ints or arrays): :func:`conv_size`, :func:`same_size`,
:func:`conv_transpose_size`, :func:`pool_size`, :func:`upsample_size`, :func:`pad_size`,
:func:`slice_size`.

Semantics checked against PyTorch (tests/test_formulas.py) and ONNX:

* conv: ``floor((n + pb + pe - d*(k-1) - 1) / s) + 1``; raises when the padded input is
  smaller than the dilated kernel (the output would be < 1). ``padding_mode='reflect'`` needs
  each pad < n, ``'circular'`` each pad <= n. ONNX ``auto_pad=SAME_*`` gives ``ceil(n / s)`` at
  every size (the frontend's resolved pads hold only at the example size).
* pools: the same, plus ceil_mode's ``+ (s - 1)``, and PyTorch's rule that the last window must
  start inside the input or the left padding (``if (out-1)*s >= n + pb: out -= 1``). ONNX
  Runtime and the ONNX spec from opset 22 apply that rule; ONNX *shape inference* for
  opset < 22 does not: set ``attrs.extra["onnx_legacy_ceil"] = True`` to get that. PyTorch
  raises when a pad exceeds ``kernel // 2`` (the kernel, not the dilated extent); ONNX Runtime
  when a pad is >= the kernel (``semantics="onnx"``). Output < 1 raises.
* conv_transpose: ``(n-1)*s - pb - pe + d*(k-1) + output_padding + 1``, raising below 1;
  output_padding must be smaller than the stride or the dilation. With ``attrs.size_from``
  (``up(x, output_size=skip.shape[2:])``) the output is that size, valid while it lies in
  ``[base, base + s - 1]`` (``base`` being the size with output_padding 0), as torch checks. ONNX ``output_shape``
  (``attrs.extra["output_shape"]``) fixes the output; ``auto_pad=SAME_*`` gives ``n * s``.
* upsample: ``floor(n * scale)`` in double precision (as ATen), or a fixed ``size``, or the
  size of ``size_from``; an output < 1 raises.
* adaptive_pool: the target (``None`` keeps the axis); global_pool: 1.
* pad: ``n + pb + pe`` (negative pads crop); a result < 1 is invalid (PyTorch itself allows 0,
  but nothing downstream can use an empty map). reflect: pads < n; circular: pads <= n.
* slice: Python slicing, clamped (``len(range(n)[start:stop:step])``); empty is invalid.
* pixel_shuffle: ``n * r``; pixel_unshuffle: ``n / r``, raising unless r divides n.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from archlint.graph import ELEMENTWISE_MERGES, Attrs

__all__ = [
    "ShapeError",
    "UnsupportedOp",
    "axis_size",
    "always_invalid",
    "infer_spatial",
    "conv_size",
    "same_size",
    "conv_transpose_size",
    "pool_size",
    "upsample_size",
    "pad_size",
    "slice_size",
    "SPATIAL_OPS",
    "PASS_THROUGH",
]

#: Single-input ops whose output spatial sizes follow from the input's, axis by axis.
SPATIAL_OPS = frozenset(
    {
        "conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_pool",
        "global_pool", "upsample", "pad", "slice", "pixel_shuffle", "pixel_unshuffle",
    }
)
#: Ops that leave every spatial size as it is.
PASS_THROUGH = frozenset({"input", "norm", "pointwise", "output", "softmax", "roll"})

_POOLS = frozenset({"max_pool", "avg_pool", "lp_pool"})
_SAME = ("SAME_UPPER", "SAME_LOWER")


class ShapeError(ValueError):
    """The op raises at this input size; ``str(exc)`` is the one-line reason."""


class UnsupportedOp(ValueError):
    """The op's spatial output is not a function of its inputs' spatial sizes alone."""


# -- the formulas (ints or int64 arrays) ----------------------------------------------------


def conv_size(n: Any, k: int, s: int = 1, d: int = 1, pb: int = 0, pe: int = 0) -> Any:
    return (n + pb + pe - d * (k - 1) - 1) // s + 1


def same_size(n: Any, s: int) -> Any:
    """ONNX auto_pad SAME_UPPER/SAME_LOWER: ``ceil(n / s)``."""
    return (n + s - 1) // s


def conv_transpose_size(
    n: Any, k: int, s: int = 1, d: int = 1, pb: int = 0, pe: int = 0, output_padding: int = 0
) -> Any:
    return (n - 1) * s - pb - pe + d * (k - 1) + output_padding + 1


def pool_size(
    n: Any,
    k: int,
    s: int,
    d: int = 1,
    pb: int = 0,
    pe: int = 0,
    ceil_mode: bool = False,
    last_window_rule: bool = True,
) -> Any:
    """PyTorch's ``pooling_output_shape_pad_lr``; ``last_window_rule=False`` is ONNX < 22."""
    out = (n + pb + pe - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and last_window_rule:
        # the last window must start inside the input or the left padding
        out = out - ((out - 1) * s >= n + pb)
    return out


def upsample_size(n: Any, scale: float) -> Any:
    """``floor(n * scale)`` with the product in double precision, as ATen computes it."""
    if isinstance(n, np.ndarray):
        return np.floor(n.astype(np.float64) * float(scale)).astype(np.int64)
    return int(math.floor(float(n) * float(scale)))


def pad_size(n: Any, pb: int, pe: int) -> Any:
    return n + pb + pe


def slice_size(n: Any, start: int | None, stop: int | None, step: int = 1) -> Any:
    """``len(range(n)[start:stop:step])`` for step >= 1 (Python and ONNX clamping)."""
    begin = 0 if start is None else _clamp(start + n if start < 0 else start + 0 * n, n)
    end = n if stop is None else _clamp(stop + n if stop < 0 else stop + 0 * n, n)
    return _maximum((end - begin + step - 1) // step, 0)


def _clamp(x: Any, n: Any) -> Any:
    if isinstance(x, np.ndarray) or isinstance(n, np.ndarray):
        return np.clip(x, 0, np.maximum(n, 0))
    return min(max(x, 0), max(n, 0))


def _maximum(x: Any, lo: int) -> Any:
    return np.maximum(x, lo) if isinstance(x, np.ndarray) else max(x, lo)


# -- per-op dispatch --------------------------------------------------------------------------


def _per_axis(values: Sequence[Any] | None, axis: int, default: Any) -> Any:
    if not values:
        return default
    return values[axis] if axis < len(values) else values[-1]


def _pads(attrs: Attrs, axis: int) -> tuple[int, int]:
    return tuple(_per_axis(attrs.padding, axis, (0, 0)))  # type: ignore[return-value]


def _pad_mode_invalid(mode: str, n: Any, pb: int, pe: int) -> Any:
    if mode == "reflect":
        return (n <= pb) | (n <= pe)
    if mode == "circular":
        out = n + pb + pe
        invalid = (n < pb) | (n < pe)
        # ATen fills the centre, then copies each wrapped border from inside the output, with
        # clamped slices and a broadcasting copy_ that refuses a partial overlap
        invalid = invalid | _bad_copy(
            (max(pb, 0), out - max(pe, 0), out), (max(-pb, 0), n - max(-pe, 0), n), alias=False
        )
        if pb > 0:
            invalid = invalid | _bad_copy((0, pb, out), (out - pb - max(pe, 0), out - max(pe, 0), out))
        if pe > 0:
            invalid = invalid | _bad_copy((out - pe, out, out), (max(pb, 0), max(pb, 0) + pe, out))
        return invalid
    return False


def _aten_slice(start: Any, end: Any, length: Any) -> tuple[Any, Any]:
    start = np.clip(np.where(start < 0, start + length, start), 0, np.maximum(length, 0))
    end = np.clip(np.where(end < 0, end + length, end), 0, np.maximum(length, 0))
    return start, np.maximum(end, start)


def _bad_copy(dest: tuple[Any, Any, Any], src: tuple[Any, Any, Any], alias: bool = True) -> Any:
    """Whether ``out[dest].copy_(x[src])`` raises: a shape mismatch, or a partial overlap."""
    d0, d1 = _aten_slice(*dest)
    s0, s1 = _aten_slice(*src)
    dn, sn = d1 - d0, s1 - s0
    bad = (dn != sn) & (sn != 1)
    if alias:
        bad = bad | ((d0 < s1) & (s0 < d1) & ((d0 != s0) | (d1 != s1)))
    return bad if isinstance(dest[2], np.ndarray) else bool(bad)


def always_invalid(op: str, attrs: Attrs, semantics: str = "torch") -> str | None:
    """Why the op raises at every input size, or None."""
    if op in ("conv", "conv_transpose", *_POOLS):
        for what, values in (("kernel", attrs.kernel), ("stride", attrs.stride),
                             ("dilation", attrs.dilation)):
            if any(int(v) < 1 for v in values):
                return f"{what} {tuple(values)} is not positive"
    if op == "upsample" and attrs.scale is not None and attrs.size is None and attrs.size_from is None:
        if any(not math.isfinite(float(v)) or float(v) <= 0 for v in attrs.scale):
            return f"scale {tuple(attrs.scale)} is not a positive number"
    if op in _POOLS and not attrs.auto_pad.upper().startswith("SAME"):
        for axis, k in enumerate(attrs.kernel):
            pb, pe = _pads(attrs, axis)
            if semantics == "onnx":
                if max(pb, pe) >= k:
                    return f"pad {max(pb, pe)} is not smaller than the kernel {k}"
            elif max(pb, pe) > k // 2:
                return f"pad {max(pb, pe)} is more than half the kernel size {k}"
    if op == "conv_transpose":
        for axis, k in enumerate(attrs.kernel):
            s = _per_axis(attrs.stride, axis, 1)
            d = _per_axis(attrs.dilation, axis, 1)
            op_ = _per_axis(attrs.output_padding, axis, 0)
            if op_ >= s and op_ >= d:
                return f"output_padding {op_} is not smaller than the stride {s} or the dilation {d}"
    if op in ("pixel_shuffle", "pixel_unshuffle") and (attrs.factor or 0) < 1:
        return f"{op} factor {attrs.factor} is not a positive integer"
    return None


def axis_size(
    op: str,
    attrs: Attrs,
    axis: int,
    n: Any,
    *,
    ref: Any = None,
    semantics: str = "torch",
) -> tuple[Any, Any]:
    """(output size, invalid) of spatial axis ``axis`` of a single-input spatial op."""
    if op == "conv":
        k = _per_axis(attrs.kernel, axis, 1)
        s = _per_axis(attrs.stride, axis, 1)
        d = _per_axis(attrs.dilation, axis, 1)
        if attrs.auto_pad.upper() in _SAME:
            out = same_size(n, s)
            return out, out < 1
        pb, pe = _pads(attrs, axis)
        mode_invalid = _pad_mode_invalid(attrs.padding_mode, n, pb, pe)
        if s == 1:  # no division: the common size-keeping conv shares its input's array
            grow = pb + pe - d * (k - 1)
            out = n if grow == 0 else n + grow
            return out, mode_invalid if grow >= 0 else (out < 1) | mode_invalid
        out = conv_size(n, k, s, d, pb, pe)
        return out, (out < 1) | mode_invalid
    if op in _POOLS:
        k = _per_axis(attrs.kernel, axis, 1)
        s = _per_axis(attrs.stride, axis, k)
        d = _per_axis(attrs.dilation, axis, 1)
        if attrs.auto_pad.upper() in _SAME:
            out = same_size(n, s)
            return out, out < 1
        pb, pe = _pads(attrs, axis)
        legacy = bool(attrs.extra.get("onnx_legacy_ceil", False))
        if s == 1 and not (op == "avg_pool" and len(attrs.kernel) == 3):
            grow = pb + pe - d * (k - 1)  # ceil_mode changes nothing at stride 1
            out = n if grow == 0 else n + grow
            return out, False if grow >= 0 else out < 1
        out = pool_size(n, k, s, d, pb, pe, attrs.ceil_mode, last_window_rule=not legacy)
        if op == "avg_pool" and len(attrs.kernel) == 3 and semantics == "torch":
            # avg_pool3d alone also checks the unpadded input against the kernel
            return out, (out < 1) | (n < k)
        return out, out < 1
    if op == "conv_transpose":
        k = _per_axis(attrs.kernel, axis, 1)
        s = _per_axis(attrs.stride, axis, 1)
        if attrs.size_from is not None and ref is not None:
            # ConvTranspose(x, output_size=ref): torch picks output_padding to hit ref, which
            # must lie within [base, base + stride - 1]
            d = _per_axis(attrs.dilation, axis, 1)
            pb, pe = _pads(attrs, axis)
            base = conv_transpose_size(n, k, s, d, pb, pe, 0)
            return ref, (ref < base) | (ref > base + s - 1) | (ref < 1)
        fixed = attrs.extra.get("output_shape")
        if fixed:
            out = int(_per_axis(fixed, axis, 1))
            return out, out < 1
        if attrs.auto_pad.upper() in _SAME:
            out = n * s
            return out, out < 1
        d = _per_axis(attrs.dilation, axis, 1)
        pb, pe = _pads(attrs, axis)
        out = conv_transpose_size(n, k, s, d, pb, pe, _per_axis(attrs.output_padding, axis, 0))
        return out, out < 1
    if op == "upsample":
        if attrs.size_from is not None and ref is not None:
            out = ref
        elif attrs.size is not None and _per_axis(attrs.size, axis, None) is not None:
            out = int(_per_axis(attrs.size, axis, None))
        elif attrs.scale is not None:
            out = upsample_size(n, _per_axis(attrs.scale, axis, 1.0))
        else:
            raise UnsupportedOp("upsample with neither a scale nor a size")
        return out, out < 1
    if op == "adaptive_pool":
        target = _per_axis(attrs.size, axis, None)
        out = n if target is None else int(target)
        return out, (out < 1) | (n < 1)
    if op == "global_pool":
        return 1, n < 1
    if op == "pad":
        pb, pe = _pads(attrs, axis)
        out = pad_size(n, pb, pe)
        invalid = (out < 1) | _pad_mode_invalid(attrs.padding_mode, n, pb, pe)
        if attrs.padding_mode in ("zeros", "constant"):
            # constant padding crops first (``narrow``), which needs a non-negative length
            invalid = invalid | (n + min(pb, 0) + min(pe, 0) < 0)
        return out, invalid
    if op == "slice":
        start, stop, step = _per_axis(attrs.slices, axis, (None, None, 1))
        if step < 1:
            raise UnsupportedOp(f"slice step {step} (only positive steps exist in PyTorch)")
        out = slice_size(n, start, stop, step)
        return out, out < 1
    if op == "pixel_shuffle":
        return n * int(attrs.factor or 1), n < 1
    if op == "pixel_unshuffle":
        r = int(attrs.factor or 1)
        return n // r, (n % r != 0) | (n < r)
    raise UnsupportedOp(f"no per-axis size formula for op {op!r}")


# -- scalar entry point -------------------------------------------------------------------------


def infer_spatial(
    op: str,
    attrs: Attrs,
    input_spatial: list[tuple[int, ...]],
    *,
    semantics: str = "torch",
) -> tuple[int, ...]:
    """Output spatial sizes of ``op`` from its inputs' spatial sizes (see the module docs)."""
    if not input_spatial:
        raise UnsupportedOp(f"{op} has no input")
    first = tuple(int(v) for v in input_spatial[0])
    ref_given = attrs.size_from is not None and len(input_spatial) > 1
    if op in PASS_THROUGH:
        return first
    if op in SPATIAL_OPS:
        reason = always_invalid(op, attrs, semantics)
        if reason:
            raise ShapeError(f"{op}: {reason}")
        if any(v < 1 for v in first):
            raise ShapeError(f"{op}: empty input {first}")
        ref = tuple(input_spatial[1]) if ref_given else None
        out = []
        for axis, n in enumerate(first):
            size, invalid = axis_size(
                op, attrs, axis, n, ref=None if ref is None else ref[axis], semantics=semantics
            )
            if invalid:
                raise ShapeError(_explain(op, attrs, axis, n, int(size)))
            out.append(int(size))
        if op == "global_pool" and attrs.extra.get("keepdim", attrs.extra.get("keepdims", True)) is False:
            return ()
        return tuple(out)
    if op in ELEMENTWISE_MERGES:
        return _broadcast(op, [tuple(s) for s in input_spatial])
    if op == "concat":
        return _concat(attrs, [tuple(s) for s in input_spatial])
    if op == "flatten":
        start = 1 if attrs.axis is None else attrs.axis
        if start < 0 or start <= 1:
            return ()
        raise UnsupportedOp("flatten that keeps spatial axes")
    if op == "linear":
        if not first:
            return ()
        if attrs.in_features is not None and first[-1] != attrs.in_features:
            raise ShapeError(
                f"linear expects {attrs.in_features} features on the last axis, got {first[-1]}"
            )
        return first[:-1] + ((attrs.out_features,) if attrs.out_features is not None else ())
    raise UnsupportedOp(f"no spatial size formula for op {op!r}")


def _explain(op: str, attrs: Attrs, axis: int, n: int, out: int) -> str:
    where = f"on spatial axis {axis}"
    if op in ("conv", *_POOLS) and out < 1:
        k = _per_axis(attrs.kernel, axis, 1)
        d = _per_axis(attrs.dilation, axis, 1)
        pb, pe = _pads(attrs, axis)
        return (
            f"{op}: kernel extent {d * (k - 1) + 1} is larger than the padded input "
            f"{n + pb + pe} {where}"
        )
    if op in ("conv", "pad") and attrs.padding_mode in ("reflect", "circular"):
        pb, pe = _pads(attrs, axis)
        if out >= 1:
            return f"{op}: {attrs.padding_mode} padding {(pb, pe)} is too large for size {n} {where}"
    if op == "pixel_unshuffle":
        return f"pixel_unshuffle: size {n} is not divisible by {attrs.factor} {where}"
    return f"{op}: output size {out} < 1 for input size {n} {where}"


def _broadcast(op: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for pos in range(-rank, 0):
        values = {s[pos] for s in shapes if len(s) >= -pos}
        big = values - {1}
        if len(big) > 1:
            raise ShapeError(f"{op}: spatial sizes {sorted(big)} disagree (shapes {shapes})")
        out.append(big.pop() if big else 1)
    return tuple(out)


def _concat(attrs: Attrs, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    rank = len(shapes[0]) + 2
    if any(len(s) + 2 != rank for s in shapes):
        raise ShapeError(f"concat: ranks differ (spatial shapes {shapes})")
    axis = 1 if attrs.axis is None else attrs.axis % rank
    out = []
    for i in range(rank - 2):
        values = [s[i] for s in shapes]
        if axis == i + 2:
            out.append(sum(values))
        elif len(set(values)) > 1:
            raise ShapeError(f"concat: spatial sizes {values} disagree on axis {i}")
        else:
            out.append(values[0])
    return tuple(out)
