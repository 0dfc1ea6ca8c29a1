"""Parity with a real CPU run: checks that meta kernels skip, and PyTorch's own error messages."""


from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from archlint.frontends.torch.inputs import _module_nd
from archlint.frontends.torch.locate import _one_line
from archlint.frontends.torch.op_attrs import _FUNCTIONS, _METHODS, _module_handler
from archlint.frontends.torch.opcall import (
    OpCall,
    _function_origin,
    _ints,
    _module_origin,
)


class CpuOnlyError(RuntimeError):
    """An error PyTorch raises on a real device that its meta kernel does not raise."""


def _bound_call(kind: str, target: Any, args: tuple, kwargs: dict) -> tuple[str, OpCall] | None:
    """``(op kind, call bound to parameter names)`` for the ops the parity checks know."""
    if kind == "module":
        handler = _module_handler(target)
    elif kind == "method":
        handler = _METHODS.get(target)
    else:
        handler = _FUNCTIONS.get(target)
    if handler is None:
        return None
    op, params, _ = handler
    call = OpCall(kind=kind, target=target, args=tuple(args), kwargs=dict(kwargs),
                  raw_args=tuple(args), raw_kwargs=dict(kwargs),
                  module=target if kind == "module" else None)
    if params is not None:
        call.bind(params)
    return op, call


def check_cpu_only_rules(kind: str, target: Any, args: tuple, kwargs: dict) -> None:
    """Raise :class:`CpuOnlyError` (PyTorch's CPU message) where the meta kernel let a call
    through that a real run refuses."""
    bound = _bound_call(kind, target, args, kwargs)
    if bound is None:
        return
    op, call = bound
    x = call.args[0] if call.args else None
    if not isinstance(x, torch.Tensor):
        return
    if op == "conv_transpose":
        channels = _conv_channels_message(op, call, x)
        if channels is not None:
            raise CpuOnlyError(channels)
        _check_output_padding(call)
    elif op == "adaptive_pool":
        _check_nonempty_adaptive_input(call, x)


def _conv_transpose_geometry(call: OpCall) -> tuple[tuple[int, ...], ...]:
    if call.module is not None:
        m = call.module
        nd = len(m.kernel_size)
        return _ints(m.stride, nd), _ints(m.output_padding, nd), _ints(m.dilation, nd)
    nd = call.get("weight").dim() - 2
    return (_ints(call.get("stride", 1), nd), _ints(call.get("output_padding", 0), nd),
            _ints(call.get("dilation", 1), nd))


def _check_output_padding(call: OpCall) -> None:
    stride, output_padding, dilation = _conv_transpose_geometry(call)
    if all(op < s or op < d for op, s, d in zip(output_padding, stride, dilation)):
        return
    if len(stride) == 1:  # PyTorch runs 1-d as 2-d with a unit height
        stride, output_padding, dilation = (1, *stride), (0, *output_padding), (1, *dilation)
    axes = ("depth", "height", "width")[-len(stride):]
    parts = [f"{name}_{axis}: {v}" for name, values in
             (("output_padding", output_padding), ("stride", stride), ("dilation", dilation))
             for axis, v in zip(axes, values)]
    raise CpuOnlyError(
        "output padding must be smaller than either stride or dilation, but got " + " ".join(parts)
    )


def _check_nonempty_adaptive_input(call: OpCall, x: torch.Tensor) -> None:
    sizes = list(x.shape)
    if x.dim() == 3 and call.kind == "function" and "1d" in getattr(call.target, "__name__", ""):
        sizes.insert(-1, 1)  # adaptive 1-d pools run as 2-d
    elif call.module is not None and _module_nd(call.module) == 1:
        sizes.insert(-1, 1)
    empty = [i for i, s in enumerate(sizes) if s == 0 and i > 0]
    if not empty:
        return
    nd = max(len(sizes) - 2, 2)
    kind = "max" if "max" in (_module_origin(call.module) if call.module is not None
                              else _function_origin(call.target)).lower() else "avg"
    raise CpuOnlyError(
        f"adaptive_{kind}_pool{nd}d(): Expected input to have non-zero size for non-batch "
        f"dimensions, but input has sizes {sizes} with dimension {empty[0]} being empty"
    )


def pytorch_message(kind: str, target: Any, args: tuple, kwargs: dict,
                    exc: BaseException) -> str:
    """The one-line reason PyTorch gives on a real device, where the meta kernel words it
    differently (or less helpfully); else the exception's own first line."""
    if isinstance(exc, CpuOnlyError):
        return str(exc)
    try:
        bound = _bound_call(kind, target, args, kwargs)
        message = _rephrase(*bound) if bound is not None else None
    except Exception:
        message = None
    return message or _one_line(exc)


def _rephrase(op: str, call: OpCall) -> str | None:
    x = call.args[0] if call.args else None
    if op == "concat":
        return _cat_message(call.get("tensors"), int(call.get("dim", 0)))
    if op in ("add", "sub", "mul", "div", "?") and len(call.args) >= 2:
        return _broadcast_message(call.args[0], call.args[1])
    if not isinstance(x, torch.Tensor):
        return None
    if op in ("conv", "conv_transpose"):
        return _conv_channels_message(op, call, x)
    if op == "linear":
        return _linear_message(call, x)
    if op in ("pixel_shuffle", "pixel_unshuffle"):
        return _shuffle_message(op, call, x)
    if op == "norm" and isinstance(call.module, nn.LayerNorm):
        shape = list(call.module.normalized_shape)
        if list(x.shape[-len(shape):]) != shape:
            inner = ", ".join(str(s) for s in shape)
            return (f"Given normalized_shape={shape}, expected input with shape [*, {inner}], "
                    f"but got input of size{list(x.shape)}")
    return None


def _broadcast_message(a: Any, b: Any) -> str | None:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return None
    rank = max(a.dim(), b.dim())
    for i in range(rank - 1, -1, -1):
        sa = a.shape[i - rank + a.dim()] if i - rank + a.dim() >= 0 else 1
        sb = b.shape[i - rank + b.dim()] if i - rank + b.dim() >= 0 else 1
        if sa != sb and sa != 1 and sb != 1:
            return (f"The size of tensor a ({sa}) must match the size of tensor b ({sb}) "
                    f"at non-singleton dimension {i}")
    return None


def _cat_message(tensors: Any, dim: int) -> str | None:
    tensors = [t for t in tensors or () if isinstance(t, torch.Tensor) and t.dim() > 0]
    if len(tensors) < 2 or len({t.dim() for t in tensors}) != 1:
        return None
    first, rank = tensors[0], tensors[0].dim()
    dim %= rank
    for number, t in enumerate(tensors[1:], 1):
        for d in range(rank):
            if d != dim and t.shape[d] != first.shape[d]:
                return (f"Sizes of tensors must match except in dimension {dim}. Expected size "
                        f"{first.shape[d]} but got size {t.shape[d]} for tensor number {number} "
                        "in the list.")
    return None


def _conv_channels_message(op: str, call: OpCall, x: torch.Tensor) -> str | None:
    if call.module is not None:
        weight, groups = call.module.weight, call.module.groups
    else:
        weight, groups = call.get("weight"), int(call.get("groups", 1))
    nd = weight.dim() - 2
    if x.dim() not in (nd + 1, nd + 2):
        return None
    channels = x.shape[-nd - 1]
    transposed = op == "conv_transpose"
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if channels == expected:
        return None
    given = "transposed=1" if transposed else f"groups={groups}"
    return (f"Given {given}, weight of size {list(weight.shape)}, expected input{list(x.shape)} "
            f"to have {expected} channels, but got {channels} channels instead")


def _linear_message(call: OpCall, x: torch.Tensor) -> str | None:
    weight = call.module.weight if call.module is not None else call.get("weight")
    if x.dim() < 2 or weight.dim() != 2 or x.shape[-1] == weight.shape[1]:
        return None
    rows = math.prod(x.shape[:-1])
    return (f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x.shape[-1]} and "
            f"{weight.shape[1]}x{weight.shape[0]}): the input has {x.shape[-1]} features but "
            f"the layer expects in_features={weight.shape[1]}")


def _shuffle_message(op: str, call: OpCall, x: torch.Tensor) -> str | None:
    if call.module is not None:
        factor = getattr(call.module, "upscale_factor", None) or call.module.downscale_factor
    else:
        factor = int(call.get("upscale_factor") or call.get("downscale_factor"))
    if op == "pixel_shuffle":
        if x.dim() >= 3 and x.shape[-3] % (factor * factor):
            return (f"pixel_shuffle expects its input's 'channel' dimension to be divisible by "
                    f"the square of upscale_factor, but input.size(-3)={x.shape[-3]} is not "
                    f"divisible by {factor * factor}")
        return None
    for axis, name in ((-2, "height"), (-1, "width")):
        if x.dim() >= 3 and x.shape[axis] % factor:
            return (f"pixel_unshuffle expects {name} to be divisible by downscale_factor, but "
                    f"input.size({axis})={x.shape[axis]} is not divisible by {factor}")
    return None
