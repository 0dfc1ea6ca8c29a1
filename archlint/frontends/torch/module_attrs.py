"""Op mapping for module calls: one ``nn.Module`` class -> (op kind, :class:`~archlint.graph.Attrs`).

Used by :mod:`archlint.frontends.torch.op_attrs`, which also maps functions and methods.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from archlint.frontends.torch.inputs import _module_nd
from archlint.frontends.torch.opcall import (
    OpCall,
    _conv_padding,
    _ints,
    _pairs,
    _per_axis,
)
from archlint.graph import Attrs

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
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        # F.instance_norm refuses one spatial element when it uses the input's statistics
        extra["input_stats"] = bool(m.training or not m.track_running_stats)
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


def blocks_geometry(kernel, dilation, padding, stride, output_size=None) -> dict[str, Any]:
    """nn.Unfold / nn.Fold arguments, two spatial axes each (all PyTorch supports)."""
    geometry = {"kernel": _ints(kernel, 2), "dilation": _ints(dilation, 2),
                "padding": _ints(padding, 2), "stride": _ints(stride, 2)}
    if output_size is not None:
        geometry["output_size"] = _ints(output_size, 2)
    return geometry


def _blocks_module(kind: str) -> Callable[[OpCall], Attrs]:
    def attrs(call: OpCall) -> Attrs:
        m = call.module
        return Attrs(extra={kind: blocks_geometry(m.kernel_size, m.dilation, m.padding, m.stride,
                                                  getattr(m, "output_size", None))})
    return attrs


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
    # kept unknown for the shape and size passes; axis provenance reads extra["unfold"/"fold"]
    (nn.Unfold, ("unknown", None, _blocks_module("unfold"))),
    (nn.Fold, ("unknown", None, _blocks_module("fold"))),
]
