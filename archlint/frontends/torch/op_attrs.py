"""Op mapping: one call -> (op kind, normalized :class:`~archlint.graph.Attrs`, origin), per module
class, function and Tensor method."""


from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F

from archlint.frontends.torch.layout_attrs import (
    _einsum_fn,
    _expand_fn,
    _gather_fn,
    _getitem_fn,
    _index_select_fn,
    _matmul_fn,
    _merge_fn,
    _permute_fn,
    _reduce_fn,
    _roll_fn,
    _sdpa_fn,
    _softmax_fn,
    _split_fn,
    _unbind_fn,
)
from archlint.frontends.torch.module_attrs import (
    _adaptive_size,
    blocks_geometry,
    _Handler,
    _module_handler,
    _no_attrs,
    _pad_attrs,
    _upsample_attrs,
)
from archlint.frontends.torch.opcall import (
    OpCall,
    _conv_padding,
    _function_origin,
    _ints,
    _module_origin,
    _pairs,
    _per_axis,
)
from archlint.graph import Attrs


def describe(call: OpCall) -> tuple[str, Attrs, str]:
    """Normalize one call to ``(op kind, Attrs, origin)``; unknown calls stay ``unknown``."""
    if call.kind == "module":
        origin = _module_origin(call.target)
        handler = _module_handler(call.target)
    elif call.kind == "method":
        origin = f"Tensor.{call.target}"
        handler = _METHODS.get(call.target)
    else:
        origin = _function_origin(call.target)
        handler = _FUNCTIONS.get(call.target)
    if handler is None:
        return "unknown", Attrs(), origin
    op, params, attrs_fn = handler
    if params is not None:
        call.bind(params)
    try:
        result = attrs_fn(call)
    except Exception:  # an argument we cannot read (a failed upstream value): kind without attrs
        return (op if op != "?" else "unknown"), Attrs(), origin
    if isinstance(result, tuple):
        return result[0], result[1], origin
    return op, result, origin


# ---- functions and methods --------------------------------------------------------------------


def _conv_fn(call: OpCall) -> Attrs:
    w = call.get("weight")
    kernel = tuple(w.shape[2:])
    nd = len(kernel)
    groups = int(call.get("groups", 1))
    dilation = _ints(call.get("dilation", 1), nd)
    padding, auto_pad = _conv_padding(call.get("padding", 0), kernel, dilation)
    return Attrs(kernel=kernel, stride=_ints(call.get("stride", 1), nd), dilation=dilation,
                 padding=padding, groups=groups, in_channels=int(w.shape[1]) * groups,
                 out_channels=int(w.shape[0]), bias=call.get("bias") is not None,
                 auto_pad=auto_pad)


def _conv_transpose_fn(call: OpCall) -> Attrs:
    w = call.get("weight")
    kernel = tuple(w.shape[2:])
    nd = len(kernel)
    groups = int(call.get("groups", 1))
    return Attrs(kernel=kernel, stride=_ints(call.get("stride", 1), nd),
                 dilation=_ints(call.get("dilation", 1), nd),
                 padding=_pairs(call.get("padding", 0), nd),
                 output_padding=_ints(call.get("output_padding", 0), nd), groups=groups,
                 in_channels=int(w.shape[0]), out_channels=int(w.shape[1]) * groups,
                 bias=call.get("bias") is not None)


def _fn_nd(call: OpCall) -> int:
    rank = call.input_rank()
    if rank is not None:
        return rank - 2
    return len(_per_axis(call.get("kernel_size"), 1))


def _window(call: OpCall) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    nd = _fn_nd(call)
    kernel = _ints(call.get("kernel_size"), nd)
    stride = call.get("stride")
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) \
        else _ints(stride, nd)
    return nd, kernel, stride


def _window_over_its_input(call: OpCall) -> bool:
    """``F.avg_pool2d(y, y.shape[2:])``: a window sized from its own input is a global pool."""
    source = call.size_source(call.bound_raw.get("kernel_size"))
    raw_input = call.bound_raw.get("input")
    nd, kernel, stride = _window(call)
    return (
        source is not None
        and source == call.producer(raw_input)
        and call.spatial_of(source) == kernel
        and stride == kernel
        and _pairs(call.get("padding", 0), nd) == ((0, 0),) * nd
    )


def _max_pool_fn(call: OpCall) -> Attrs | tuple[str, Attrs]:
    if _window_over_its_input(call):
        return "global_pool", Attrs(extra={"kind": "max", "keepdim": True})
    nd, kernel, stride = _window(call)
    return Attrs(kernel=kernel, stride=stride, padding=_pairs(call.get("padding", 0), nd),
                 dilation=_ints(call.get("dilation", 1), nd),
                 ceil_mode=bool(call.get("ceil_mode", False)))


def _avg_pool_fn(call: OpCall) -> Attrs | tuple[str, Attrs]:
    if _window_over_its_input(call):
        return "global_pool", Attrs(extra={"kind": "avg", "keepdim": True})
    nd, kernel, stride = _window(call)
    divisor = call.get("divisor_override")
    return Attrs(kernel=kernel, stride=stride, padding=_pairs(call.get("padding", 0), nd),
                 dilation=(1,) * nd, ceil_mode=bool(call.get("ceil_mode", False)),
                 count_include_pad=bool(call.get("count_include_pad", True)),
                 extra={"divisor_override": divisor} if divisor else {})


def _lp_pool_fn(call: OpCall) -> Attrs:
    nd, kernel, stride = _window(call)
    return Attrs(kernel=kernel, stride=stride, padding=((0, 0),) * nd, dilation=(1,) * nd,
                 ceil_mode=bool(call.get("ceil_mode", False)),
                 extra={"norm_type": call.get("norm_type")})


def _adaptive_fn(kind: str) -> Callable[[OpCall], Attrs]:
    def attrs(call: OpCall) -> Attrs:
        nd = _fn_nd(call)
        return Attrs(size=_adaptive_size(call.get("output_size"), nd), extra={"kind": kind})
    return attrs


def _interpolate_fn(default_mode: str, default_align: bool | None) -> Callable[[OpCall], Attrs]:
    def attrs(call: OpCall) -> Attrs:
        nd = _fn_nd(call)
        size = call.get("size")
        size_from = call.size_source(call.bound_raw.get("size")) if size is not None else None
        if size_from is not None and call.spatial_of(size_from) != tuple(_per_axis(size, nd)):
            size_from = None  # computed from that tensor's size, but not equal to it
        align = call.get("align_corners", default_align)
        return _upsample_attrs(size, call.get("scale_factor"), call.get("mode", default_mode),
                               default_align if align is None else align, nd, size_from)
    return attrs


def _pad_fn(call: OpCall) -> Attrs:
    return _pad_attrs(call.get("pad"), call.get("mode", "constant") or "constant",
                      call.get("value"), call.input_rank())


def _linear_fn(call: OpCall) -> Attrs:
    w = call.get("weight")
    return Attrs(in_features=int(w.shape[-1]), out_features=int(w.shape[0]) if w.dim() > 1 else 1,
                 bias=call.get("bias") is not None)


def _concat_fn(call: OpCall) -> Attrs:
    tensors = call.get("tensors") or ()
    raws = call.bound_raw.get("tensors") or ()
    constants = []
    for slot, (value, raw) in enumerate(zip(tensors, raws)):
        if call.producer(raw) is None and isinstance(value, torch.Tensor) and isinstance(
                raw, (fx.Node, torch.Tensor)):
            constants.append({"name": call.constant_name(raw), "shape": tuple(value.shape),
                              "adapts": call.sized_from_activation(raw), "slot": slot})
    extra: dict[str, Any] = {"constants": tuple(constants)} if constants else {}
    return Attrs(axis=int(call.get("dim", 0)), extra=extra)


def _flatten_fn(call: OpCall) -> Attrs:
    return Attrs(axis=int(call.get("start_dim", 0)), end_axis=int(call.get("end_dim", -1)))


def _reshape_fn(call: OpCall) -> Attrs:
    raw = call.bound_raw.get("shape")
    value = call.get("shape")
    if isinstance(value, (tuple, list, torch.Size)) and len(value) == 1 \
            and isinstance(value[0], (tuple, list, torch.Size)):
        value, raw = value[0], raw[0] if isinstance(raw, (tuple, list)) else raw
    if isinstance(raw, fx.Node):  # a whole torch.Size from another tensor: x.view(y.shape)
        return Attrs(target_shape=tuple(None for _ in value))
    raws = raw if isinstance(raw, (tuple, list)) else [raw] * len(value)
    target = tuple(None if call.is_runtime(r) else int(v) for v, r in zip(value, raws))
    return Attrs(target_shape=target)


def _shape_only(call: OpCall) -> Attrs:
    """squeeze / unsqueeze / unflatten / view_as: the output shape says it all."""
    return Attrs()


def _instance_norm_fn(call: OpCall) -> Attrs:
    # F.instance_norm (not aten's torch.instance_norm) refuses one spatial element with input stats
    return Attrs(extra={"input_stats": bool(call.get("use_input_stats", True))})


def _pixel_shuffle_fn(call: OpCall) -> Attrs:
    return Attrs(factor=int(call.get("upscale_factor")))


def _pixel_unshuffle_fn(call: OpCall) -> Attrs:
    return Attrs(factor=int(call.get("downscale_factor")))


def _blocks_fn(kind: str) -> Callable[[OpCall], Attrs]:
    """F.unfold / F.fold: kept ``unknown`` for the shape and size passes (meta kernels give the
    shape); the geometry in ``extra[kind]`` is what axis provenance reads."""
    def attrs(call: OpCall) -> Attrs:
        return Attrs(extra={kind: blocks_geometry(
            call.get("kernel_size"), call.get("dilation", 1), call.get("padding", 0),
            call.get("stride", 1), call.get("output_size"))})
    return attrs


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_MAXP = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGP = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
         "divisor_override")
_LPP = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
_ADAPT = ("input", "output_size")
_INTERP = ("input", "size", "scale_factor", "mode", "align_corners")
_BINARY = ("input", "other")

_POINTWISE_FUNCTION_NAMES = (
    "relu relu_ relu6 elu elu_ selu celu gelu silu mish leaky_relu leaky_relu_ hardtanh hardtanh_ "
    "hardswish hardsigmoid sigmoid tanh softplus softsign threshold "
    "prelu rrelu logsigmoid tanhshrink hardshrink softshrink dropout dropout1d dropout2d "
    "dropout3d alpha_dropout feature_alpha_dropout normalize"
).split()
_POINTWISE_TORCH_NAMES = (
    "relu relu_ sigmoid sigmoid_ tanh tanh_ exp log log1p abs sqrt rsqrt neg clamp clip pow sin "
    "cos erf zeros_like ones_like full_like rand_like randn_like empty_like "
    "square reciprocal sign floor ceil round nan_to_num dropout detach clone selu celu "
    "hardtanh threshold"
).split()
_POINTWISE_METHODS = (
    "contiguous clone detach float double half bfloat16 to type type_as cpu cuda relu relu_ "
    "sigmoid sigmoid_ tanh tanh_ exp exp_ log abs sqrt sqrt_ neg clamp clamp_ clip pow pow_ "
    "requires_grad_ sin cos square reciprocal long int bool masked_fill "
    "masked_fill_ nan_to_num erf sign floor ceil round __neg__ __pow__ __abs__ neg_ fill_ zero_ "
    "__invert__"
).split()

_FUNCTIONS: dict[Any, _Handler] = {}
_METHODS: dict[str, _Handler] = {}


def _register_functions() -> None:
    def add(fns: Iterable[Any], handler: _Handler) -> None:
        for fn in fns:
            if fn is not None:
                _FUNCTIONS[fn] = handler

    g = lambda ns, *names: [getattr(ns, n, None) for n in names]  # noqa: E731
    add(g(F, "conv1d", "conv2d", "conv3d") + g(torch, "conv1d", "conv2d", "conv3d"),
        ("conv", _CONV, _conv_fn))
    add(g(F, "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
        + g(torch, "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
        ("conv_transpose", _CONV_T, _conv_transpose_fn))
    add(g(F, "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
          "max_pool2d_with_indices", "max_pool3d_with_indices")
        + g(torch, "max_pool1d", "max_pool2d", "max_pool3d"), ("max_pool", _MAXP, _max_pool_fn))
    add(g(F, "avg_pool1d", "avg_pool2d", "avg_pool3d") + g(torch, "avg_pool1d"),
        ("avg_pool", _AVGP, _avg_pool_fn))
    add(g(F, "lp_pool1d", "lp_pool2d", "lp_pool3d"), ("lp_pool", _LPP, _lp_pool_fn))
    add(g(F, "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d")
        + g(torch, "adaptive_avg_pool1d"), ("adaptive_pool", _ADAPT, _adaptive_fn("avg")))
    add(g(F, "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
          "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
          "adaptive_max_pool3d_with_indices") + g(torch, "adaptive_max_pool1d"),
        ("adaptive_pool", _ADAPT, _adaptive_fn("max")))
    add(g(F, "interpolate", "upsample"), ("upsample", _INTERP, _interpolate_fn("nearest", None)))
    add(g(F, "upsample_nearest"), ("upsample", ("input", "size", "scale_factor"),
                                   _interpolate_fn("nearest", None)))
    add(g(F, "upsample_bilinear"), ("upsample", ("input", "size", "scale_factor"),
                                    _interpolate_fn("bilinear", True)))
    add(g(F, "pad") + g(torch, "constant_pad_nd"),
        ("pad", ("input", "pad", "mode", "value"), _pad_fn))
    add(g(F, "linear"), ("linear", ("input", "weight", "bias"), _linear_fn))
    add(g(F, "batch_norm", "layer_norm", "group_norm", "local_response_norm",
          "rms_norm") + g(torch, "batch_norm", "layer_norm", "group_norm", "instance_norm"),
        ("norm", None, _no_attrs))
    add(g(F, "instance_norm"), ("norm", ("input", "running_mean", "running_var", "weight", "bias",
                                         "use_input_stats"), _instance_norm_fn))
    add(g(F, "pixel_shuffle") + g(torch, "pixel_shuffle"),
        ("pixel_shuffle", ("input", "upscale_factor"), _pixel_shuffle_fn))
    add(g(F, "pixel_unshuffle") + g(torch, "pixel_unshuffle"),
        ("pixel_unshuffle", ("input", "downscale_factor"), _pixel_unshuffle_fn))
    add(g(F, "unfold"), ("unknown", ("input", "kernel_size", "dilation", "padding", "stride"),
                         _blocks_fn("unfold")))
    add(g(F, "fold"), ("unknown", ("input", "output_size", "kernel_size", "dilation", "padding",
                                   "stride"), _blocks_fn("fold")))
    add(g(torch, "cat", "concat", "concatenate"), ("concat", ("tensors", "dim"), _concat_fn))
    add(g(torch, "flatten"), ("flatten", ("input", "start_dim", "end_dim"), _flatten_fn))
    add(g(torch, "reshape"), ("reshape", ("input", "shape"), _reshape_fn))
    for names, kind in (("add iadd", "add"), ("sub isub", "sub"), ("mul imul", "mul"),
                        ("truediv itruediv", "div")):
        add(g(operator, *names.split()), ("?", _BINARY, _merge_fn(kind)))
    for names, kind in (("add", "add"), ("sub subtract", "sub"), ("mul multiply", "mul"),
                        ("div divide true_divide", "div")):
        add(g(torch, *names.split()), ("?", _BINARY, _merge_fn(kind)))
        for name in names.split():
            _METHODS[name] = ("?", _BINARY, _merge_fn(kind))
            _METHODS[name + "_"] = ("?", _BINARY, _merge_fn(kind))
    for dunder, kind in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "div"),
                         ("div", "div")):
        for form in ("__{}__", "__i{}__"):
            _METHODS[form.format(dunder)] = ("?", _BINARY, _merge_fn(kind))
    for rform in ("__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__rdiv__"):
        _METHODS[rform] = ("pointwise", None, _no_attrs)  # scalar on the left
    add(g(operator, "neg", "pow", "abs", "invert", "mod", "floordiv"),
        ("pointwise", None, _no_attrs))
    add(g(F, *_POINTWISE_FUNCTION_NAMES) + g(torch, *_POINTWISE_TORCH_NAMES),
        ("pointwise", None, _no_attrs))
    for method in _POINTWISE_METHODS:
        _METHODS[method] = ("pointwise", None, _no_attrs)
    _METHODS["view"] = ("reshape", ("input", "*shape"), _reshape_fn)
    _METHODS["reshape"] = ("reshape", ("input", "*shape"), _reshape_fn)
    _METHODS["flatten"] = ("flatten", ("input", "start_dim", "end_dim"), _flatten_fn)
    for reducer, kind in (("mean", "avg"), ("amax", "max"), ("sum", "sum"), ("amin", "min")):
        handler = ("?", ("input", "dim", "keepdim"), _reduce_fn(kind))
        _METHODS[reducer] = handler
        add(g(torch, reducer), handler)
    for splitter in ("chunk", "split", "tensor_split"):
        dim_pos = ("input", "arg", "dim")
        _METHODS[splitter] = ("?", dim_pos, _split_fn)
        add(g(torch, splitter), ("?", dim_pos, _split_fn))
    permute = ("?", None, _permute_fn)
    for name in ("permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis"):
        _METHODS[name] = permute
        add(g(torch, name), permute)
    softmax = ("?", None, _softmax_fn)
    for name in ("softmax", "log_softmax", "softmin"):
        _METHODS[name] = softmax
        add(g(torch, name) + g(F, name), softmax)
    matmul = ("?", None, _matmul_fn)
    add(g(operator, "matmul") + g(torch, "matmul", "bmm"), matmul)
    for name in ("matmul", "bmm", "__matmul__"):
        _METHODS[name] = matmul
    add(g(torch, "einsum"), ("?", None, _einsum_fn))
    add(g(F, "scaled_dot_product_attention"), ("?", None, _sdpa_fn))
    _METHODS["expand"] = ("?", None, _expand_fn)
    _METHODS["expand_as"] = ("?", None, _expand_fn)
    _METHODS["roll"] = ("?", None, _roll_fn)
    add(g(torch, "roll"), ("?", None, _roll_fn))
    _METHODS["unbind"] = ("?", None, _unbind_fn)
    add(g(torch, "unbind"), ("?", None, _unbind_fn))
    for name in ("unflatten", "view_as", "reshape_as", "squeeze", "unsqueeze"):
        _METHODS[name] = ("reshape", None, _shape_only)
    add(g(torch, "squeeze", "unsqueeze", "unflatten"), ("reshape", None, _shape_only))
    add([operator.getitem], ("?", None, _getitem_fn))
    _METHODS["index_select"] = ("?", ("input", "dim", "index"), _index_select_fn)
    add(g(torch, "index_select"), ("?", ("input", "dim", "index"), _index_select_fn))
    _METHODS["gather"] = ("?", ("input", "dim", "index"), _gather_fn(False))
    _METHODS["take_along_dim"] = ("?", ("input", "indices", "dim"), _gather_fn(True))
    add(g(torch, "gather"), _METHODS["gather"])
    add(g(torch, "take_along_dim"), _METHODS["take_along_dim"])
    _METHODS["__getitem__"] = ("?", None, _getitem_fn)


_register_functions()
