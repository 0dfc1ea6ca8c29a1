"""Op mapping: one call -> (op kind, normalized :class:`~archlint.graph.Attrs`, origin), per module
class, function and Tensor method."""


from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archlint.frontends.torch.inputs import _module_nd
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


# ---- modules -------------------------------------------------------------------------------


def _conv_module(call: OpCall) -> Attrs:
    m = call.module
    kernel, dilation = tuple(m.kernel_size), tuple(m.dilation)
    padding, auto_pad = _conv_padding(m.padding, kernel, dilation)
    return Attrs(kernel=kernel, stride=tuple(m.stride), dilation=dilation, padding=padding,
                 groups=m.groups, in_channels=m.in_channels, out_channels=m.out_channels,
                 bias=m.bias is not None, padding_mode=m.padding_mode, auto_pad=auto_pad)


def _conv_transpose_module(call: OpCall) -> Attrs:
    m = call.module
    nd = len(m.kernel_size)
    # `up(x, output_size=skip.shape[2:])`: the output follows that tensor at every input size.
    size_from = call.size_source(call.bound_raw.get("output_size"))
    output_size = call.get("output_size")
    if size_from is not None and (
        output_size is None or call.spatial_of(size_from) != tuple(output_size)[-nd:]
    ):
        size_from = None  # computed from that tensor's size, but not equal to it
    return Attrs(kernel=tuple(m.kernel_size), stride=tuple(m.stride), dilation=tuple(m.dilation),
                 padding=_pairs(m.padding, nd), output_padding=_ints(m.output_padding, nd),
                 groups=m.groups, in_channels=m.in_channels, out_channels=m.out_channels,
                 bias=m.bias is not None, padding_mode=m.padding_mode, size_from=size_from,
                 extra={} if output_size is None else {"output_size": tuple(output_size)[-nd:]})


def _pool_nd(call: OpCall) -> int:
    nd = _module_nd(call.module) if call.module is not None else None
    if nd is None:
        rank = call.input_rank()
        nd = rank - 2 if rank is not None else len(_per_axis(call.get("kernel_size"), 1))
    return nd


def _max_pool_module(call: OpCall) -> Attrs:
    m, nd = call.module, _pool_nd(call)
    stride = m.stride if m.stride is not None else m.kernel_size
    return Attrs(kernel=_ints(m.kernel_size, nd), stride=_ints(stride, nd),
                 padding=_pairs(m.padding, nd), dilation=_ints(m.dilation, nd),
                 ceil_mode=bool(m.ceil_mode))


def _avg_pool_module(call: OpCall) -> Attrs:
    m, nd = call.module, _pool_nd(call)
    stride = m.stride if m.stride is not None else m.kernel_size
    divisor = getattr(m, "divisor_override", None)
    return Attrs(kernel=_ints(m.kernel_size, nd), stride=_ints(stride, nd),
                 padding=_pairs(m.padding, nd), dilation=(1,) * nd, ceil_mode=bool(m.ceil_mode),
                 count_include_pad=bool(m.count_include_pad),
                 extra={"divisor_override": divisor} if divisor else {})


def _lp_pool_module(call: OpCall) -> Attrs:
    m, nd = call.module, _pool_nd(call)
    stride = m.stride if m.stride is not None else m.kernel_size
    return Attrs(kernel=_ints(m.kernel_size, nd), stride=_ints(stride, nd),
                 padding=((0, 0),) * nd, dilation=(1,) * nd, ceil_mode=bool(m.ceil_mode),
                 extra={"norm_type": m.norm_type})


def _adaptive_size(output_size: Any, nd: int) -> tuple[int | None, ...]:
    return tuple(None if s is None else int(s) for s in _per_axis(output_size, nd))


def _adaptive_module(call: OpCall) -> Attrs:
    m, nd = call.module, _pool_nd(call)
    kind = "max" if "Max" in type(m).__name__ else "avg"
    return Attrs(size=_adaptive_size(m.output_size, nd), extra={"kind": kind})


def _upsample_module(call: OpCall) -> Attrs:
    m = call.module
    nd = _spatial_rank(call)
    align = m.align_corners
    if isinstance(m, nn.UpsamplingBilinear2d):
        align = True
    return _upsample_attrs(m.size, m.scale_factor, m.mode, align, nd, None)


def _spatial_rank(call: OpCall) -> int:
    rank = call.input_rank()
    if rank is not None:
        return rank - 2
    nd = _module_nd(call.module) if call.module is not None else None
    return nd or 2


def _upsample_attrs(size: Any, scale: Any, mode: str, align: Any, nd: int,
                    size_from: str | None) -> Attrs:
    return Attrs(
        size=None if size is None else tuple(int(s) for s in _per_axis(size, nd)),
        scale=None if scale is None else tuple(float(s) for s in _per_axis(scale, nd)),
        size_from=size_from,
        mode=str(mode),
        align_corners=None if align is None else bool(align),
    )


_PAD_MODES = {"constant": "zeros", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


def _pad_attrs(pad: Any, mode: str, value: Any, rank: int | None) -> Attrs:
    """F.pad lists (begin, end) pairs from the LAST dim backwards; IR pairs go axis by axis."""
    pad = [int(p) for p in pad]
    nd = rank - 2 if rank is not None else len(pad) // 2
    pairs = []
    for axis in range(nd):
        j = nd - 1 - axis  # pair index counted from the last dim
        pairs.append((pad[2 * j], pad[2 * j + 1]) if 2 * j + 1 < len(pad) else (0, 0))
    extra: dict[str, Any] = {"value": value} if value else {}
    if len(pad) > 2 * nd:
        extra["pads_channel_or_batch"] = tuple(pad[2 * nd:])
    return Attrs(padding=tuple(pairs), padding_mode=_PAD_MODES.get(mode, mode), extra=extra)


def _pad_module(call: OpCall) -> Attrs:
    m = call.module
    name = type(m).__name__
    mode = ("reflect" if "Reflection" in name else "replicate" if "Replication" in name
            else "circular" if "Circular" in name else "constant")
    return _pad_attrs(m.padding, mode, getattr(m, "value", None), call.input_rank())


def _linear_module(call: OpCall) -> Attrs:
    m = call.module
    return Attrs(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)


def _norm_module(call: OpCall) -> Attrs:
    m = call.module
    extra = {k: getattr(m, k) for k in ("num_features", "num_groups", "num_channels",
                                        "normalized_shape", "eps") if hasattr(m, k)}
    return Attrs(extra=extra)


def _flatten_module(call: OpCall) -> Attrs:
    m = call.module
    return Attrs(axis=m.start_dim, end_axis=m.end_dim)


def _pixel_shuffle_module(call: OpCall) -> Attrs:
    return Attrs(factor=call.module.upscale_factor)


def _pixel_unshuffle_module(call: OpCall) -> Attrs:
    return Attrs(factor=call.module.downscale_factor)


def _unflatten_module(call: OpCall) -> Attrs:
    m = call.module
    return Attrs(extra={"unflatten_dim": m.dim, "unflatten_sizes": tuple(m.unflattened_size)})


def _no_attrs(call: OpCall) -> Attrs:
    return Attrs()


def _mha_module(call: OpCall) -> Attrs:
    # the sequence dim of key/value: tokens are mixed over it
    return Attrs(extra={"seq_dim": 1 if call.module.batch_first else 0})


def _softmax_module(call: OpCall) -> Attrs:
    dim = call.module.dim
    return Attrs(axis=None if dim is None else int(dim))


_Handler = tuple[str, "tuple[str, ...] | None", Callable[[OpCall], Any]]


def _module_handler(m: nn.Module) -> _Handler | None:
    for cls, handler in _MODULE_TABLE:
        if isinstance(m, cls):
            return handler
    if type(m).__module__ in ("torch.nn.modules.activation", "torch.nn.modules.dropout"):
        return ("pointwise", None, _no_attrs)
    return None


_NORM_CLASSES = tuple(
    c for c in (
        nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
        nn.CrossMapLRN2d, getattr(nn, "RMSNorm", None),
    ) if c is not None
)

_MODULE_TABLE: list[tuple[Any, _Handler]] = [
    (nn.modules.conv._ConvTransposeNd, ("conv_transpose", ("input", "output_size"), _conv_transpose_module)),
    (nn.modules.conv._ConvNd, ("conv", None, _conv_module)),
    (nn.modules.pooling._MaxPoolNd, ("max_pool", None, _max_pool_module)),
    (nn.modules.pooling._AvgPoolNd, ("avg_pool", None, _avg_pool_module)),
    (nn.modules.pooling._LPPoolNd, ("lp_pool", None, _lp_pool_module)),
    (nn.modules.pooling._AdaptiveAvgPoolNd, ("adaptive_pool", None, _adaptive_module)),
    (nn.modules.pooling._AdaptiveMaxPoolNd, ("adaptive_pool", None, _adaptive_module)),
    (nn.Upsample, ("upsample", None, _upsample_module)),
    (nn.modules.padding._ConstantPadNd, ("pad", None, _pad_module)),
    (nn.modules.padding._ReflectionPadNd, ("pad", None, _pad_module)),
    (nn.modules.padding._ReplicationPadNd, ("pad", None, _pad_module)),
    (getattr(nn.modules.padding, "_CircularPadNd", ()), ("pad", None, _pad_module)),
    (nn.Linear, ("linear", None, _linear_module)),
    (_NORM_CLASSES, ("norm", None, _norm_module)),
    (nn.Flatten, ("flatten", None, _flatten_module)),
    (nn.Unflatten, ("reshape", None, _unflatten_module)),
    (nn.PixelShuffle, ("pixel_shuffle", None, _pixel_shuffle_module)),
    (nn.PixelUnshuffle, ("pixel_unshuffle", None, _pixel_unshuffle_module)),
    ((nn.Identity, nn.ChannelShuffle), ("pointwise", None, _no_attrs)),
    (nn.MultiheadAttention, ("attention", None, _mha_module)),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmin), ("softmax", None, _softmax_module)),
    (nn.GLU, ("unknown", None, _no_attrs)),  # not shape-preserving
]


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


def _pixel_shuffle_fn(call: OpCall) -> Attrs:
    return Attrs(factor=int(call.get("upscale_factor")))


def _pixel_unshuffle_fn(call: OpCall) -> Attrs:
    return Attrs(factor=int(call.get("downscale_factor")))


def _merge_fn(kind: str) -> Callable[[OpCall], tuple[str, Attrs]]:
    """A merge only when both operands are activations; ``x * 0.5`` is pointwise."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        raws = list(call.raw_args[:2])
        if len(raws) < 2:
            raws.append(call.raw_kwargs.get("other"))
        both = all(call.producer(r) is not None for r in raws)
        if both:
            return kind, Attrs()
        return "pointwise", Attrs(extra=_constant_operand(call, raws))
    return attrs


def _constant_operand(call: OpCall, raws: list[Any]) -> dict[str, Any]:
    """The operand of ``x + self.pos_embed`` that is a parameter or buffer (not a scalar)."""
    for slot, raw in enumerate(raws):
        value = call.args[slot] if slot < len(call.args) else call.kwargs.get("other")
        if call.producer(raw) is not None or not isinstance(value, torch.Tensor):
            continue
        if not isinstance(raw, (fx.Node, torch.Tensor)) or value.dim() == 0:
            continue
        return {"constant": {"name": call.constant_name(raw), "shape": tuple(value.shape),
                             "adapts": call.sized_from_activation(raw), "slot": slot}}
    return {}


def _reduce_fn(kind: str) -> Callable[[OpCall], tuple[str, Attrs]]:
    """``x.mean((2, 3))`` / ``amax`` over every spatial axis is a global pool."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        rank = call.input_rank()
        dims = call.get("dim")
        if rank is None or dims is None:
            return "unknown", Attrs()
        dims = {int(d) % rank for d in _per_axis(dims, 1)}
        if rank < 3 or dims != set(range(2, rank)):
            return "reduce", Attrs(extra={"kind": kind, "dims": tuple(sorted(dims)),
                                          "keepdim": bool(call.get("keepdim", False))})
        keepdim = bool(call.get("keepdim", False))
        return "global_pool", Attrs(extra={"kind": kind, "keepdim": keepdim})
    return attrs


def _split_fn(call: OpCall) -> tuple[str, Attrs]:
    """A split along batch or channels leaves the spatial axes alone."""
    rank = call.input_rank()
    dim = int(call.get("dim", 0))
    if rank is None:
        return "unknown", Attrs()
    if dim % rank >= 2:
        return "split", Attrs(extra={"split_dim": dim % rank})
    nd = rank - 2
    return "slice", Attrs(slices=((None, None, 1),) * nd, extra={"split_dim": dim % rank})


def _getitem_fn(call: OpCall) -> tuple[str, Attrs]:
    """``x[:, :, a:b, c:d]`` -> slice per spatial axis; other indexing is unknown."""
    x = call.args[0]
    if not isinstance(x, torch.Tensor):
        return "pointwise", Attrs()  # an element of a module's tuple output
    index = call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    rank = x.dim()
    if sum(1 for i in index if i is Ellipsis) > 1:
        return "unknown", Attrs()
    if any(not isinstance(i, slice) and i is not Ellipsis for i in index):
        return _index_fn(call)
    explicit = [i for i in index if i is not Ellipsis]
    fill = rank - len(explicit)
    per_dim: list[slice] = []
    for i in index:
        per_dim.extend([slice(None)] * fill if i is Ellipsis else [i])
    per_dim.extend([slice(None)] * (rank - len(per_dim)))
    spatial = tuple(
        (_opt_int(s.start), _opt_int(s.stop), 1 if s.step is None else int(s.step))
        for s in per_dim[2:]
    )
    extra = {}
    if any(s != slice(None) for s in per_dim[:2]):
        extra["slices_batch_channel"] = tuple((s.start, s.stop, s.step) for s in per_dim[:2])
    return "slice", Attrs(slices=spatial, extra=extra)


def _index_fn(call: OpCall) -> tuple[str, Attrs]:
    """``x[0]``, ``x[:, 0]``, ``x[:, 1:]``, ``x[..., None]``: one entry per index item."""
    x = call.args[0]
    index = call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    items: list[tuple] = []
    for i in index:
        if i is Ellipsis:
            items.append(("ellipsis",))
        elif i is None:
            items.append(("none",))
        elif isinstance(i, slice):
            items.append(("slice", _opt_int(i.start), _opt_int(i.stop),
                          1 if i.step is None else int(i.step)))
        elif isinstance(i, int) or (isinstance(i, torch.Tensor) and i.dim() == 0
                                    and not i.dtype.is_floating_point and i.device.type != "meta"):
            items.append(("int", int(i)))
        else:
            items.append(("tensor",))
    return "index", Attrs(extra={"index": tuple(items), "rank": x.dim()})


def _permute_fn(call: OpCall) -> tuple[str, Attrs]:
    """permute / transpose / swapaxes / movedim / .mT, as one output->input dim map."""
    rank = call.input_rank()
    if rank is None:
        return "unknown", Attrs()
    name = getattr(call.target, "__name__", call.target)
    args = call.args[1:]
    kw = call.kwargs
    if name == "permute":
        dims = kw.get("dims", args[0] if len(args) == 1 else args)
        perm = tuple(int(d) % rank for d in _per_axis(dims, rank))
    elif name in ("movedim", "moveaxis"):
        src = [int(d) % rank for d in _per_axis(kw.get("source", args[0]), 1)]
        dst = [int(d) % rank for d in _per_axis(kw.get("destination", args[1]), 1)]
        rest = [d for d in range(rank) if d not in src]
        perm_list: list[int | None] = [None] * rank
        for s_, d_ in zip(src, dst):
            perm_list[d_] = s_
        it = iter(rest)
        perm = tuple(p if p is not None else next(it) for p in perm_list)
    else:  # transpose / swapaxes / swapdims
        d0 = int(kw.get("dim0", args[0] if args else -2)) % rank
        d1 = int(kw.get("dim1", args[1] if len(args) > 1 else -1)) % rank
        order = list(range(rank))
        order[d0], order[d1] = order[d1], order[d0]
        perm = tuple(order)
    return "permute", Attrs(extra={"perm": perm})


def _softmax_fn(call: OpCall) -> tuple[str, Attrs]:
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else None)
    if dim is None or not isinstance(dim, int):
        return "pointwise", Attrs()
    return "softmax", Attrs(axis=int(dim))


def _matmul_fn(call: OpCall) -> tuple[str, Attrs]:
    """``a @ b``; an operand that is no activation (a parameter) is recorded as the weight."""
    raws = list(call.raw_args[:2])
    acts = [call.producer(r) is not None for r in raws]
    extra: dict[str, Any] = {}
    if not all(acts):
        side = 0 if not acts[0] else 1
        w = call.args[side]
        extra["weight"] = {"slot": side, "shape": tuple(w.shape) if isinstance(w, torch.Tensor)
                           else None}
    return "matmul", Attrs(extra=extra)


def _einsum_fn(call: OpCall) -> tuple[str, Attrs]:
    equation = call.args[0]
    operands = call.args[1:]
    raws = call.raw_args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands, raws = operands[0], raws[0]
    if not isinstance(equation, str):
        return "unknown", Attrs()
    kinds = tuple("act" if call.producer(r) is not None else
                  tuple(o.shape) if isinstance(o, torch.Tensor) else None
                  for o, r in zip(operands, raws))
    return "einsum", Attrs(extra={"equation": equation.replace(" ", ""), "operands": kinds})


def _sdpa_fn(call: OpCall) -> tuple[str, Attrs]:
    return "attention", Attrs(extra={"seq_dim": -2})


def _expand_fn(call: OpCall) -> tuple[str, Attrs]:
    return "expand", Attrs()


def _roll_fn(call: OpCall) -> tuple[str, Attrs]:
    shifts = call.kwargs.get("shifts", call.args[1] if len(call.args) > 1 else None)
    dims = call.kwargs.get("dims", call.args[2] if len(call.args) > 2 else None)
    if dims is None:
        return "unknown", Attrs()
    return "roll", Attrs(extra={"shifts": tuple(int(s) for s in _per_axis(shifts, 1)),
                                "dims": tuple(int(d) for d in _per_axis(dims, 1))})


def _unbind_fn(call: OpCall) -> tuple[str, Attrs]:
    rank = call.input_rank()
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
    if rank is None:
        return "unknown", Attrs()
    return "split", Attrs(extra={"split_dim": int(dim) % rank, "unbind": True})


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


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
    add(g(F, "batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
          "rms_norm") + g(torch, "batch_norm", "layer_norm", "group_norm", "instance_norm"),
        ("norm", None, _no_attrs))
    add(g(F, "pixel_shuffle") + g(torch, "pixel_shuffle"),
        ("pixel_shuffle", ("input", "upscale_factor"), _pixel_shuffle_fn))
    add(g(F, "pixel_unshuffle") + g(torch, "pixel_unshuffle"),
        ("pixel_unshuffle", ("input", "downscale_factor"), _pixel_unshuffle_fn))
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
    _METHODS["__getitem__"] = ("?", None, _getitem_fn)


_register_functions()
