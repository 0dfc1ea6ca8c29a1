"""Op mapping: one ONNX node -> (op kind, normalized Attrs), the same kinds as the torch frontend."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from archlint.frontends.onnx.geometry import (
    _attributes,
    _pairs,
    _slice_bound,
    _window_geometry,
    conv_transpose_padding,
)
from archlint.graph import NO_ATTRS, Attrs

POINTWISE_OPS = frozenset(
    """Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Gelu Mish Softplus
    Softsign ThresholdedRelu Swish Erf Exp Log Sqrt Reciprocal Neg Abs Sign Floor Ceil Round Sin
    Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Not IsNaN IsInf Dropout Identity Softmax
    LogSoftmax Hardmax Clip Cast CastLike Shrink QuantizeLinear DequantizeLinear""".split()
)
NORM_OPS = frozenset(
    """BatchNormalization LRN InstanceNormalization LayerNormalization GroupNormalization
    MeanVarianceNormalization LpNormalization RMSNormalization""".split()
)
#: Elementwise ops: a merge when two or more operands are activations, else pointwise.
ARITHMETIC_MERGES = {"Add": "add", "Sum": "add", "Mean": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
ELEMENTWISE_OTHER = frozenset("Pow Max Min Mod Where And Or Xor Equal Less Greater BitShift".split())
POOLS = {"MaxPool": "max_pool", "AveragePool": "avg_pool", "LpPool": "lp_pool"}
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
SPATIAL_REDUCES = {"ReduceMean": "mean", "ReduceMax": "max", "ReduceL2": "l2", "ReduceSum": "sum"}
#: pointwise ops no earlier test in ``_normalize`` claims (Softmax has its own mapping)
_PLAIN_POINTWISE = POINTWISE_OPS - {"Softmax", "LogSoftmax"}
_PAD_MODES = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class OpMapping:
    """Per-op normalization, mixed into the graph builder (it reads the builder's tensors)."""

    def _normalize(self, node: onnx.NodeProto) -> tuple[str, Attrs]:
        t = node.op_type
        # the commonest kinds first (this runs once per node); reading attributes can fail on a
        # malformed one, so only a node without any skips that
        if (t in _PLAIN_POINTWISE or t in ARITHMETIC_MERGES) and not node.attribute:
            return ("pointwise", NO_ATTRS) if t in _PLAIN_POINTWISE else self._elementwise(node)
        a = _attributes(node)
        if t in _PLAIN_POINTWISE:
            return "pointwise", NO_ATTRS
        if t in ARITHMETIC_MERGES:
            return self._elementwise(node)
        if t == "Conv":
            return "conv", self._conv(node, a)
        if t == "ConvTranspose":
            return "conv_transpose", self._conv_transpose(node, a)
        if t in POOLS:
            return POOLS[t], self._pool(node, a)
        if t in GLOBAL_POOLS:
            return "global_pool", Attrs(mode=t[len("Global"):-len("Pool")].lower())
        if t in SPATIAL_REDUCES:
            kind, attrs = self._reduce(node, a)
            if kind == "unknown" and attrs.extra.get("axes") is not None:  # a mean over tokens
                return "reduce", Attrs(extra={"kind": SPATIAL_REDUCES[t],
                                              "dims": tuple(attrs.extra["axes"]),
                                              "keepdim": attrs.extra["keepdims"]})
            return kind, attrs
        if t == "Pad":
            return "pad", self._pad(node, a)
        if t in ("Resize", "Upsample"):
            return "upsample", self._resize(node, a)
        if t == "Slice":
            return "slice", self._slice(node, a)
        if t == "Split":
            rank = len(self.tensors.shapes.get(node.input[0]) or ())
            axis = a.get("axis", 0) % rank if rank else a.get("axis", 0)
            if rank and axis >= 2:
                return "split", Attrs(extra={"split_dim": axis})
            return "slice", Attrs(axis=a.get("axis", 0), extra={"split": True})
        if t == "Concat":
            return "concat", Attrs(axis=a.get("axis"), extra=self._constants(node, concat=True))
        if t in ("Softmax", "LogSoftmax"):
            return self._softmax(node, a)
        if t == "Gather":
            return self._gather(node, a)
        if t == "Col2Im":  # F.fold (opset 18)
            return "unknown", self._col2im(node, a)
        if t == "GatherElements":
            return self._gather_elements(node, a)
        if t == "Einsum":
            return "einsum", Attrs(extra={
                "equation": a["equation"].replace(" ", ""),
                "operands": tuple("act" if i in self.producer else
                                  tuple(self.tensors.shapes.get(i) or ()) for i in node.input)})
        if t == "Expand" and node.input[0] in self.producer:
            return "expand", NO_ATTRS
        if t in ARITHMETIC_MERGES or t in ELEMENTWISE_OTHER:
            return self._elementwise(node)
        if t == "Flatten":
            return "flatten", Attrs(axis=a.get("axis", 1), end_axis=-1)
        if t == "Reshape":
            return "reshape", Attrs(target_shape=self._reshape_target(node, a))
        if t in ("Squeeze", "Unsqueeze"):
            out = self.tensors.shapes.get(node.output[0])
            return "reshape", Attrs(target_shape=tuple(out) if out is not None else None)
        if t == "Transpose":
            return self._transpose(node, a)
        if t == "MatMul" and all(i in self.producer for i in node.input[:2]):
            return "matmul", NO_ATTRS
        if t in ("Gemm", "MatMul"):
            return "linear", self._linear(node, a)
        if t in NORM_OPS:
            return "norm", Attrs(extra={k: v for k, v in a.items() if k in ("epsilon", "size", "axis")})
        if t in POINTWISE_OPS:
            return "pointwise", NO_ATTRS
        if t == "DepthToSpace":
            return "pixel_shuffle", Attrs(factor=a["blocksize"], mode=a.get("mode", "DCR"))
        if t == "SpaceToDepth":
            return "pixel_unshuffle", Attrs(factor=a["blocksize"])
        return "unknown", NO_ATTRS

    def _activation_count(self, node: onnx.NodeProto) -> int:
        return sum(1 for t in node.input if t in self.producer)

    def _elementwise(self, node: onnx.NodeProto) -> tuple[str, Attrs]:
        if self._activation_count(node) < 2:
            return "pointwise", Attrs(extra=self._constants(node, concat=False))
        return ARITHMETIC_MERGES.get(node.op_type, "unknown"), NO_ATTRS

    def _constants(self, node: onnx.NodeProto, *, concat: bool) -> dict[str, Any]:
        """Static operands with a shape (initializers, or computed from them): a position
        embedding or class token. ``adapts``: it is computed from an activation's shape."""
        found = []
        for slot, name in enumerate(node.input):
            if not name or name in self.producer:
                continue
            shape = self.tensors.shapes.get(name)
            if not shape or len(shape) < 2 or any(d is None for d in shape):
                continue
            found.append({"name": name, "shape": tuple(shape), "slot": slot,
                          "adapts": bool(self.static.shape_sources(name))})
        if not found:
            return {}
        return {"constants": tuple(found)} if concat else {"constant": found[0]}

    def _softmax(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        if self.opsets.get("", 1) >= 13:
            axis = a.get("axis", -1)
        else:  # before opset 13 softmax runs over every dim from axis on, flattened
            axis = a.get("axis", 1)
            if rank and axis % rank != rank - 1:
                return "pointwise", NO_ATTRS
        return "softmax", Attrs(axis=int(axis))

    def _gather(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        """``x[:, 0]`` exports as Gather with a scalar index: an index op."""
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        if node.input[0] not in self.producer or not rank:
            return "unknown", NO_ATTRS
        indices = self.static.value(node.input[1]) if len(node.input) > 1 else None
        axis = a.get("axis", 0) % rank
        if indices is None or indices.ndim != 0:
            # a constant 1-D index keeps its values: provenance follows the positions it picks
            item = ("tensor",) if indices is None or indices.ndim != 1 or not 0 < indices.size \
                <= 4096 else ("tensor", tuple(int(v) for v in indices.tolist()))
            if indices is not None and indices.ndim == 2:
                item = blocks_item(indices) or item
            return "index", Attrs(extra={"index": (("slice", None, None, 1),) * axis
                                         + (item,), "rank": rank})
        return "index", Attrs(extra={"index": (("slice", None, None, 1),) * axis
                                     + (("int", int(indices)),), "rank": rank})

    def _col2im(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        """The geometry F.fold's provenance reads (symmetric pads only, as F.fold has)."""
        size = self.static.ints(node.input[1]) if len(node.input) > 2 else None
        kernel = self.static.ints(node.input[2]) if len(node.input) > 2 else None
        if not size or not kernel or len(size) != 2 or len(kernel) != 2:
            return NO_ATTRS
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or pads[:2] != pads[2:]:
            return NO_ATTRS
        return Attrs(extra={"fold": {
            "kernel": tuple(kernel), "dilation": tuple(a.get("dilations", (1, 1))),
            "padding": tuple(pads[:2]), "stride": tuple(a.get("strides", (1, 1))),
            "output_size": tuple(size)}})

    def _gather_elements(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        """``torch.gather`` with a constant index that is one list repeated over the other dims
        (of the data's sizes): an index along ``axis``; any other GatherElements is unknown."""
        shape = self.tensors.shapes.get(node.input[0])
        indices = self.static.value(node.input[1]) if len(node.input) > 1 else None
        if node.input[0] not in self.producer or not shape or indices is None \
                or indices.ndim != len(shape):
            return "unknown", NO_ATTRS
        axis = a.get("axis", 0) % len(shape)
        if any(n != m for k, (n, m) in enumerate(zip(indices.shape, shape)) if k != axis):
            return "unknown", NO_ATTRS
        line = np.moveaxis(indices, axis, -1).reshape(-1, indices.shape[axis])
        if not line.size or not (line == line[:1]).all() or line.shape[1] > 4096:
            return "unknown", NO_ATTRS
        return "index", Attrs(extra={"index": (("slice", None, None, 1),) * axis
                                     + (("tensor", tuple(int(v) for v in line[0])),),
                              "rank": len(shape)})

    def _spatial_rank(self, tensor: str, fallback: int | None = None) -> int:
        shape = self.tensors.shapes.get(tensor)
        if shape is not None and len(shape) >= 2:
            return len(shape) - 2
        if fallback is not None:
            return fallback
        raise ValueError(f"rank of {tensor!r} is unknown")

    def _in_spatial(self, tensor: str) -> tuple[int, ...] | None:
        shape = self.tensors.shapes.get(tensor)
        if shape is None or len(shape) < 3 or None in shape[2:]:
            return None
        return tuple(shape[2:])

    def _conv(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        # Everything _conv_attrs reads: the convolutions of a large graph repeat a few of these,
        # and one shared (frozen) record per kind is faster and smaller than one per node.
        weight = self.tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None
        try:
            key = (tuple((k, tuple(v) if type(v) is list else v) for k, v in a.items()), weight,
                   self.tensors.shapes.get(node.input[0]), len(node.input) > 2 and bool(node.input[2]))
            hash(key)
        except TypeError:  # an attribute value with no hash (a tensor, a graph)
            return self._conv_attrs(node, a)
        attrs = self._conv_cache.get(key)
        if attrs is None:
            attrs = self._conv_cache[key] = self._conv_attrs(node, a)
        return attrs

    def _conv_attrs(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        weight = self.tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = tuple(a.get("kernel_shape") or (weight[2:] if weight else ()))
        n = len(kernel) or self._spatial_rank(node.input[0])
        geometry = _window_geometry(a, n, kernel, self._in_spatial(node.input[0]))
        groups = int(a.get("group", 1))
        return Attrs(
            **geometry,
            groups=groups,
            in_channels=None if weight is None or weight[1] is None else weight[1] * groups,
            out_channels=None if weight is None else weight[0],
            bias=len(node.input) > 2 and bool(node.input[2]),
        )

    def _conv_transpose(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        weight = self.tensors.shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = tuple(a.get("kernel_shape") or (weight[2:] if weight else ()))
        n = len(kernel) or self._spatial_rank(node.input[0])
        stride = tuple(a.get("strides") or (1,) * n)
        dilation = tuple(a.get("dilations") or (1,) * n)
        output_padding = tuple(a.get("output_padding") or (0,) * n)
        auto_pad = a.get("auto_pad", "NOTSET")
        output_shape = tuple(a.get("output_shape") or ())
        if len(output_shape) == n + 2:
            output_shape = output_shape[2:]
        in_spatial = self._in_spatial(node.input[0])
        extra: dict[str, Any] = {}
        if output_shape:
            extra["output_shape"] = output_shape
        padding = conv_transpose_padding(
            in_spatial, kernel, stride, dilation, output_padding,
            _pairs(a.get("pads"), n), auto_pad, output_shape,
        )
        groups = int(a.get("group", 1))
        return Attrs(
            kernel=kernel, stride=stride, dilation=dilation, padding=padding,
            output_padding=output_padding, groups=groups,
            auto_pad="" if auto_pad == "NOTSET" else auto_pad,
            in_channels=None if weight is None else weight[0],
            out_channels=None if weight is None or weight[1] is None else weight[1] * groups,
            bias=len(node.input) > 2 and bool(node.input[2]),
            extra=extra,
        )

    def _pool(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        kernel = tuple(a["kernel_shape"])
        geometry = _window_geometry(a, len(kernel), kernel, self._in_spatial(node.input[0]))
        extra = {"p": a.get("p", 2)} if node.op_type == "LpPool" else {}
        return Attrs(
            **geometry,
            ceil_mode=bool(a.get("ceil_mode", 0)),
            # ONNX's default (0: padding not counted) is the opposite of PyTorch's.
            count_include_pad=bool(a.get("count_include_pad", 0)),
            extra=extra,
        )

    def _reduce(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.static.ints(node.input[1])
        keepdims = bool(a.get("keepdims", 1))
        if rank >= 3 and axes is not None:
            spatial_axes = set(range(2, rank))
            if {ax % rank for ax in axes} == spatial_axes:
                return "global_pool", Attrs(mode=SPATIAL_REDUCES[node.op_type], extra={"keepdims": keepdims})
        return "unknown", Attrs(extra={"axes": axes, "keepdims": keepdims})

    def _pad(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        if len(node.input) > 1 and node.input[1]:
            pads = self.static.ints(node.input[1])
        else:
            pads = a.get("pads", a.get("paddings"))
        axes = None
        if len(node.input) > 3 and node.input[3]:
            axes = self.static.ints(node.input[3])
        mode = a.get("mode", "constant")
        value = a.get("value", 0.0)
        if len(node.input) > 2 and node.input[2]:
            constant = self.static.floats(node.input[2])
            value = constant[0] if constant else None
        padding_mode = _PAD_MODES.get(mode, mode)
        if mode == "constant" and value != 0:
            padding_mode = "constant"
        extra: dict[str, Any] = {"value": value} if mode == "constant" else {}
        if pads is None or rank < 3:
            return Attrs(padding_mode=padding_mode, extra={**extra, "pads": pads})
        axes = list(range(rank)) if axes is None else [ax % rank for ax in axes]
        k = len(axes)
        per_axis = {ax: (pads[i], pads[i + k]) for i, ax in enumerate(axes)}
        padding = tuple(per_axis.get(ax, (0, 0)) for ax in range(2, rank))
        other = {ax: p for ax, p in per_axis.items() if ax < 2 and p != (0, 0)}
        if other:
            extra["non_spatial_pads"] = other
        return Attrs(padding=padding, padding_mode=padding_mode, extra=extra)

    def _resize(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        rank = len(self.tensors.shapes.get(node.input[0]) or ())
        inputs = list(node.input)
        if node.op_type == "Upsample":
            scales_name, sizes_name = (inputs[1] if len(inputs) > 1 else ""), ""
        elif self.opsets.get("", 1) < 11:
            scales_name, sizes_name = inputs[1], ""
        else:
            scales_name = inputs[2] if len(inputs) > 2 else ""
            sizes_name = inputs[3] if len(inputs) > 3 else ""
        scales = self.static.floats(scales_name) if scales_name else a.get("scales")
        sizes = self.static.ints(sizes_name) if sizes_name else None
        axes = a.get("axes")
        axes = list(range(rank)) if axes is None else [ax % rank for ax in axes]
        spatial_axes = list(range(2, rank))
        scale = size = None
        if scales:
            by_axis = dict(zip(axes, scales))
            scale = tuple(float(by_axis.get(ax, 1.0)) for ax in spatial_axes)
        if sizes:
            by_axis = dict(zip(axes, sizes))
            size = tuple(by_axis.get(ax) for ax in spatial_axes)
        size_from = None
        if sizes_name or scales_name:
            # The size read off another tensor (F.interpolate(x, size=skip.shape[2:])); the
            # batch and channel entries usually come from the resized tensor itself.
            sources = self.static.shape_sources(sizes_name or scales_name) - {node.input[0]}
            if len(sources) == 1:
                size_from = self.producer.get(next(iter(sources)))
        default_ctm = "half_pixel" if node.op_type == "Resize" and self.opsets.get("", 1) >= 11 else "asymmetric"
        ctm = a.get("coordinate_transformation_mode", default_ctm)
        extra = {"coordinate_transformation_mode": ctm}
        if "nearest_mode" in a:
            extra["nearest_mode"] = a["nearest_mode"]
        return Attrs(
            scale=scale, size=size, size_from=size_from, mode=a.get("mode", "nearest"),
            align_corners=ctm == "align_corners", extra=extra,
        )

    def _slice(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        shape = self.tensors.shapes.get(node.input[0])
        rank = len(shape or ())
        inputs = list(node.input) + [""] * 5
        if inputs[1]:
            starts, ends = self.static.ints(inputs[1]), self.static.ints(inputs[2])
            axes = self.static.ints(inputs[3]) if inputs[3] else None
            steps = self.static.ints(inputs[4]) if inputs[4] else None
        else:
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        if starts is None or ends is None or rank < 3:
            return Attrs(extra={"starts": starts, "ends": ends, "axes": axes, "steps": steps})
        axes = list(range(len(starts))) if axes is None else [ax % rank for ax in axes]
        steps = steps or [1] * len(starts)
        per_axis = {
            ax: (_slice_bound(s, st, start=True), _slice_bound(e, st, start=False), st)
            for ax, s, e, st in zip(axes, starts, ends, steps)
        }
        slices = tuple(per_axis.get(ax, (None, None, 1)) for ax in range(2, rank))
        other = {ax: v for ax, v in per_axis.items() if ax < 2}
        return Attrs(slices=slices, extra={"non_spatial_slices": other} if other else {})

    def _reshape_target(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[int | None, ...] | None:
        if len(node.input) < 2:  # Reshape-1 carries the shape as an attribute
            target = a.get("shape")
            return None if target is None else tuple(None if v == 0 else v for v in target)
        allow_zero = bool(a.get("allowzero", 0))
        entries = self._shape_entries(node.input[1])
        if entries is None:
            return None
        return tuple(None if (v == 0 and not allow_zero) else v for v in entries)

    def _shape_entries(self, tensor: str) -> list[int | None] | None:
        """A shape vector as written: entries computed from a runtime shape become None."""
        producer = self.static.producer_of(tensor)
        if producer is not None and producer.op_type == "Concat" and self.static.shape_sources(tensor):
            out: list[int | None] = []
            for piece in producer.input:
                values = self.static.ints(piece)
                if values is None:
                    return None
                out.extend([None] * len(values) if self.static.shape_sources(piece) else values)
            return out
        values = self.static.ints(tensor)
        if values is None:
            return None
        return [None] * len(values) if self.static.shape_sources(tensor) else values

    def _transpose(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[str, Attrs]:
        out = self.tensors.shapes.get(node.output[0])
        rank = len(out or ())
        perm = list(a.get("perm") or range(rank - 1, -1, -1))
        # A permutation of the leading axes that leaves batch and the two trailing (spatial)
        # axes alone, as in ShuffleNet's channel shuffle, only moves channels around.
        if rank >= 4 and perm[0] == 0 and perm[-2:] == [rank - 2, rank - 1]:
            return "reshape", Attrs(target_shape=tuple(out) if out else None, extra={"perm": perm})
        return "permute", Attrs(extra={"perm": tuple(int(p) for p in perm)})

    def _linear(self, node: onnx.NodeProto, a: dict[str, Any]) -> Attrs:
        a_static = node.input[0] not in self.producer
        b_static = node.input[1] not in self.producer
        bias = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])
        if b_static and not a_static:
            weight = self.tensors.shapes.get(node.input[1])
            if weight is not None and len(weight) >= 2:
                if node.op_type == "Gemm" and a.get("transB", 0):
                    out_f, in_f = weight[0], weight[1]
                else:
                    in_f, out_f = weight[-2], weight[-1]
                return Attrs(in_features=in_f, out_features=out_f, bias=bias)
        return Attrs(bias=bias, extra={"weight_is_activation": not b_static})


def blocks_item(indices: np.ndarray) -> tuple | None:
    """The index item for a constant 2-D Gather index ``idx[i, l] = start + i*d + l*s``, which
    is how torch.onnx exports F.unfold along one axis: ``("blocks", k, d, start, s)`` (read by
    provenance as offset ``i`` within block ``l``); None for any other index."""
    k, count = indices.shape
    if not k or not count or k * count > 1 << 16:
        return None
    start = int(indices[0, 0])
    d = int(indices[1, 0] - indices[0, 0]) if k > 1 else 1
    s = int(indices[0, 1] - indices[0, 0]) if count > 1 else 1
    if d < 1 or s < 1 or start < 0:
        return None
    expected = start + d * np.arange(k)[:, None] + s * np.arange(count)[None, :]
    return ("blocks", k, d, start, s) if np.array_equal(indices, expected) else None
