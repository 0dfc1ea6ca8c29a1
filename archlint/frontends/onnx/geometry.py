"""Per-op geometry (pure functions, tested against onnxruntime)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import onnx
from onnx import helper

from archlint.graph import Attrs

#: ONNX ``ends`` values meaning "to the end of the axis" (INT_MAX / INT64_MAX and friends).
_SLICE_TO_END = 2**31 - 1


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else type(exc).__name__


def _concrete(shape: Iterable[Any] | None) -> bool:
    if shape is None:
        return False
    for d in shape:  # a loop, not all(<genexpr>): this runs a few times per node
        if not isinstance(d, int) or d < 0:
            return False
    return True


_INT, _INTS, _FLOAT = onnx.AttributeProto.INT, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for attr in node.attribute:
        kind = attr.type  # the common kinds read directly: this runs once per node
        if kind == _INT:
            out[attr.name] = attr.i
            continue
        if kind == _INTS:
            out[attr.name] = list(attr.ints)
            continue
        if kind == _FLOAT:
            out[attr.name] = attr.f
            continue
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8", "replace") for v in value]
        out[attr.name] = value
    return out


def _pairs(pads: list[int] | None, n: int) -> tuple[tuple[int, int], ...]:
    """ONNX pads ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` -> ((begin, end), ...)."""
    if not pads:
        return ((0, 0),) * n
    if len(pads) != 2 * n:
        raise ValueError(f"pads has {len(pads)} entries, expected {2 * n}")
    return tuple((int(pads[i]), int(pads[i + n])) for i in range(n))


def _window_geometry(
    a: dict[str, Any], n: int, kernel: tuple[int, ...], in_spatial: tuple[int, ...] | None
) -> dict[str, Any]:
    stride = tuple(a.get("strides") or (1,) * n)
    dilation = tuple(a.get("dilations") or (1,) * n)
    auto_pad = a.get("auto_pad", "NOTSET")
    padding = same_padding(in_spatial, kernel, stride, dilation, auto_pad, _pairs(a.get("pads"), n))
    return dict(
        kernel=kernel, stride=stride, dilation=dilation, padding=padding,
        auto_pad="" if auto_pad == "NOTSET" else auto_pad,
    )


def same_padding(
    in_spatial: tuple[int, ...] | None,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    auto_pad: str,
    explicit: tuple[tuple[int, int], ...],
) -> tuple[tuple[int, int], ...]:
    """(begin, end) pads of a Conv or pool, resolving ``auto_pad`` per the ONNX spec.

    SAME_*: the output is ``ceil(in / stride)`` and the total pad is
    ``max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in)``; SAME_UPPER puts the odd
    pixel at the end, SAME_LOWER at the beginning. The split depends on the input size, so it is
    resolved at the example size (``()`` when that size is unknown).
    """
    if auto_pad in ("", "NOTSET"):
        return explicit
    if auto_pad == "VALID":
        return ((0, 0),) * len(kernel)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"unknown auto_pad {auto_pad!r}")
    if in_spatial is None:
        return ()
    out = []
    for size, k, s, d in zip(in_spatial, kernel, stride, dilation):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return tuple(out)


def conv_transpose_padding(
    in_spatial: tuple[int, ...] | None,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    output_padding: tuple[int, ...],
    explicit: tuple[tuple[int, int], ...],
    auto_pad: str,
    output_shape: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """(begin, end) pads of a ConvTranspose per the ONNX spec.

    With ``output_shape`` (or auto_pad SAME_*, whose target is ``in * stride``) the pads are
    generated: ``total = stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1 - out``;
    SAME_UPPER gives ``(total // 2, total - total // 2)``, anything else the reverse.
    """
    same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if not output_shape and not same:
        return ((0, 0),) * len(kernel) if auto_pad == "VALID" else explicit
    if in_spatial is None:
        return ()
    targets = output_shape or tuple(size * s for size, s in zip(in_spatial, stride))
    out = []
    for size, k, s, d, op, target in zip(in_spatial, kernel, stride, dilation, output_padding, targets):
        total = s * (size - 1) + op + (k - 1) * d + 1 - target
        half = int(total / 2)  # C++ division, as the spec's reference implementation
        out.append((half, total - half) if auto_pad == "SAME_UPPER" else (total - half, half))
    return tuple(out)


#: Ops whose ONNX shape inference (onnx 1.23) disagrees with the spec text and onnxruntime.
RUNTIME_CORRECTED = frozenset({"MaxPool", "AveragePool", "LpPool", "ConvTranspose"})


def runtime_spatial(
    node: onnx.NodeProto,
    in_shape: tuple[int | None, ...] | None,
    weight_shape: tuple[int | None, ...] | None,
) -> tuple[int, ...] | None:
    """Output spatial size where ONNX's shape inference is known to be wrong, else None.

    * Pools with ``ceil_mode``: a last window that would start in the end padding is dropped
      (the spec's note, onnxruntime and PyTorch); onnx's inference keeps it.
    * ConvTranspose with ``auto_pad=SAME_*`` and no ``output_shape``: the output is
      ``in * stride`` (the spec, onnxruntime); onnx's inference adds ``output_padding``.
    """
    if not _concrete(in_shape) or len(in_shape) < 3:
        return None
    a = _attributes(node)
    spatial_in = in_shape[2:]
    n = len(spatial_in)
    auto_pad = a.get("auto_pad", "NOTSET")
    if node.op_type == "ConvTranspose":
        if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not a.get("output_shape"):
            stride = a.get("strides") or [1] * n
            return tuple(size * s for size, s in zip(spatial_in, stride))
        return None
    if not a.get("ceil_mode") or auto_pad not in ("NOTSET", "VALID") or "kernel_shape" not in a:
        return None
    kernel = a["kernel_shape"]
    stride = a.get("strides") or [1] * n
    dilation = a.get("dilations") or [1] * n
    pads = ((0, 0),) * n if auto_pad == "VALID" else _pairs(a.get("pads"), n)
    from archlint.passes.formulas import pool_size

    return tuple(
        int(pool_size(size, k, s, d, pb, pe, ceil_mode=True))
        for size, k, s, d, (pb, pe) in zip(spatial_in, kernel, stride, dilation, pads)
    )


def _slice_bound(value: int, step: int, *, start: bool) -> int | None:
    """An ONNX slice bound, with the "to the end of the axis" sentinels mapped to None."""
    if step > 0 and not start and value >= _SLICE_TO_END:
        return None
    if step < 0 and not start and value <= -_SLICE_TO_END:
        return None
    if step < 0 and start and value >= _SLICE_TO_END:
        return None
    return int(value)


def _consistency_error(
    op: str, attrs: Attrs, in_shapes: list[tuple[int | None, ...] | None], out: tuple[int, ...]
) -> str | None:
    """Checks ONNX shape inference leaves out (it accepts these, the runtime fails on them)."""
    first = in_shapes[0] if in_shapes else None
    if not _concrete(first):
        return None
    if op in ("conv", "conv_transpose") and attrs.in_channels is not None and len(first) > 1:
        if first[1] != attrs.in_channels:
            return (
                f"input has {first[1]} channels but the weight expects {attrs.in_channels} "
                f"(input shape {_shape_text(first)})"
            )
    if op == "conv_transpose" and not attrs.auto_pad.startswith("SAME") and "output_shape" not in attrs.extra:
        # onnxruntime recomputes the input size from the output and refuses output_padding >=
        # stride (PyTorch also allows output_padding < dilation; onnxruntime does not)
        for s, op_ in zip(attrs.stride, attrs.output_padding):
            if op_ >= s:
                return (
                    f"output_padding {op_} is not smaller than the stride {s} "
                    "(onnxruntime rejects it)"
                )
    if op == "reshape" and math.prod(first) != math.prod(out):
        return (
            f"cannot reshape {_shape_text(first)} ({math.prod(first)} elements) to "
            f"{_shape_text(out)} ({math.prod(out)} elements)"
        )
    if any(d <= 0 for d in out) and all(d > 0 for d in first):
        if op in ("conv", "max_pool", "avg_pool", "lp_pool") and attrs.kernel:
            extents = [d * (k - 1) + 1 for k, d in zip(attrs.kernel, attrs.dilation or (1,) * len(attrs.kernel))]
            return (
                f"output would be empty ({_shape_text(out)}): the window "
                f"{'x'.join(map(str, extents))} is larger than the padded input "
                f"{_shape_text(first[2:])}"
            )
        return f"output would be empty ({_shape_text(out)}) for input {_shape_text(first)}"
    return None


def _output_channels(op: str, attrs: Attrs, in_shapes: list[tuple[int, ...]]) -> int | None:
    c = in_shapes[0][1]
    if op in ("conv", "conv_transpose"):
        return attrs.out_channels
    if op in ("max_pool", "avg_pool", "lp_pool", "upsample", "pad", "pointwise", "norm", "add", "sub", "mul", "div"):
        return c
    if op == "concat" and attrs.axis is not None and attrs.axis % len(in_shapes[0]) == 1:
        return sum(s[1] for s in in_shapes)
    if op == "pixel_shuffle" and attrs.factor:
        return c // attrs.factor ** (len(in_shapes[0]) - 2)
    if op == "pixel_unshuffle" and attrs.factor:
        return c * attrs.factor ** (len(in_shapes[0]) - 2)
    return None


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.name or node.op_type + '_' + str(index)!r} ({node.op_type})"
