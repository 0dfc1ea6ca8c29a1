"""Stand-ins for ops that a symbolic run cannot take as they are, or that cost far more than
their shape is worth.

* ``interpolate`` by a scale factor gets its size computed as PyTorch does (in float64), and a
  literal ``size=`` is checked on a literal stand-in; ``pad`` with symbolic widths and pools
  with a symbolic window get PyTorch's output-size formula and its checks (the kernels would
  specialize the symbols).
* Ops that keep their input's shape (activations, dropout in eval, norms, softmax) make the
  fake-tensor machinery decompose them into a dozen symbolic ops each, for an output of the
  input's shape: :func:`shape_preserving` returns that output directly, after the size checks
  the op makes (PyTorch's own Python checks where it has them). It answers only for inputs
  whose layout it knows (contiguous, by the strides' own expressions: no guard), and ``None``
  otherwise, so that the real op runs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F


def symbolic_interpolate_size(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``interpolate(scale_factor=s)`` with a symbolic ``s`` -> ``size=`` computed as PyTorch
    does, in float64: ``trunc(float(in) * s)`` (the C++ kernel's cast, and ``_sym_int`` of the
    recompute path; the same for the positive sizes here)."""
    params = ("input", "size", "scale_factor", "mode", "align_corners",
              "recompute_scale_factor", "antialias")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    scale = bound.get("scale_factor")
    if scale is None or bound.get("size") is not None:
        return args, kwargs
    x = bound["input"]
    dims = x.dim() - 2
    factors = list(scale) if isinstance(scale, (list, tuple)) else [scale] * dims
    symbolic = any(isinstance(f, (torch.SymFloat, torch.SymInt)) for f in factors) or any(
        isinstance(n, torch.SymInt) for n in x.shape[2:])
    if len(factors) != dims or not symbolic:
        return args, kwargs
    sizes = [torch.sym_int(x.shape[i + 2] * f) if isinstance(f, (torch.SymFloat, torch.SymInt))
             else math.trunc(x.shape[i + 2] * float(f)) for i, f in enumerate(factors)]
    bound["size"] = sizes
    bound["scale_factor"] = None
    bound["recompute_scale_factor"] = None
    rest = {k: v for k, v in bound.items() if k != "input"}
    return (x,), rest


def interpolate(args: tuple, kwargs: dict) -> Any:
    """``F.interpolate``; where a kernel takes no symbolic size (nearest's composite kernel),
    an empty tensor of the output shape after PyTorch's own check that sizes are positive.

    A literal ``size=`` on a symbolic input fixes the output whatever the input size (any input
    size >= 1 is valid), but the kernels' scale computations would guard the input to its value
    here: PyTorch's checks run on a literal stand-in of the input instead, and the output is
    built from the given size."""
    literal = _literal_size_output(args, kwargs)
    if literal is not None:
        return literal
    try:
        return F.interpolate(*args, **kwargs)
    except RuntimeError as exc:
        if "concrete integers" not in str(exc):
            raise
    x = args[0]
    size = kwargs.get("size")
    sizes = list(size) if isinstance(size, (list, tuple)) else [size] * (x.dim() - 2)
    if any(s is None for s in sizes) or len(sizes) != x.dim() - 2:
        raise NotImplementedError("interpolate with a symbolic size")
    for s in sizes:
        if s <= 0:
            raise RuntimeError(f"Input and output sizes should be greater than 0, but got "
                               f"input ({tuple(x.shape[2:])}) and output ({tuple(sizes)})")
    return x.new_empty((*x.shape[:2], *sizes))


def _literal_size_output(args: tuple, kwargs: dict) -> Any:
    params = ("input", "size", "scale_factor", "mode", "align_corners",
              "recompute_scale_factor", "antialias")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    x, size = bound.get("input"), bound.get("size")
    if not isinstance(x, torch.Tensor) or size is None or bound.get("scale_factor") is not None:
        return None
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    if any(isinstance(s, torch.SymInt) or not isinstance(s, int) for s in sizes):
        return None
    if not any(isinstance(n, torch.SymInt) for n in x.shape[2:]):
        return None
    hints = [int(n.node.hint) if isinstance(n, torch.SymInt) else int(n) for n in x.shape]
    stand_in = torch.empty(hints, dtype=x.dtype, device=x.device)
    checked = F.interpolate(stand_in, **{k: v for k, v in bound.items() if k != "input"})
    return x.new_empty((*x.shape[:2], *checked.shape[2:]))


def pad(args: tuple, kwargs: dict) -> Any:
    """``F.pad``; with symbolic pad widths (a composite kernel takes only concrete ones) or a
    symbolic input in constant mode (the C++ kernel reads ``sizes()``, pinning every size to
    its value here), an empty tensor of the constant-mode output shape after PyTorch's own size
    check."""
    params = ("input", "pad", "mode", "value")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    x, mode = bound["input"], bound.get("mode", "constant")
    symbolic_input = isinstance(x, torch.Tensor) and any(
        isinstance(s, torch.SymInt) for s in x.shape)
    if not (symbolic_input and mode == "constant"):
        try:
            return F.pad(*args, **kwargs)
        except RuntimeError as exc:
            if "concrete integers" not in str(exc):
                raise
    pad = list(bound["pad"])
    if mode != "constant" or len(pad) % 2 or len(pad) // 2 > x.dim():
        raise NotImplementedError(f"pad mode {mode!r} with symbolic widths")
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        dim = x.dim() - 1 - i
        new = shape[dim] + pad[2 * i] + pad[2 * i + 1]
        if new < 0:
            raise RuntimeError(f"The input size {shape[dim]}, plus negative padding "
                               f"{pad[2 * i]} and {pad[2 * i + 1]} resulted in a negative output "
                               f"size, which is invalid. Check dimension {dim} of your input.")
        shape[dim] = new
    return x.new_empty(shape)


POOLS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
          F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}


def has_symbolic_window(args: tuple, kwargs: dict) -> bool:
    window = list(args[1:3]) + [kwargs.get("kernel_size"), kwargs.get("stride")]
    return any(isinstance(v, torch.SymInt) or (isinstance(v, (list, tuple)) and any(
        isinstance(e, torch.SymInt) for e in v)) for v in window)


def pool(func: Callable, args: tuple, kwargs: dict) -> Any:
    """A pool whose window is a symbolic size (``avg_pool2d(y, y.shape[2:])``): the kernel
    would specialize it, so the output shape comes from PyTorch's formula
    ``floor((n + 2p - d(k - 1) - 1) / s) + 1`` (ceil mode: PyTorch's last-window rule), with its
    checks."""
    nd = POOLS[func]
    params = ("input", "kernel_size", "stride", "padding")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    x = bound["input"]
    extra = set(bound) - {"input", "kernel_size", "stride", "padding", "ceil_mode",
                          "count_include_pad", "divisor_override", "dilation", "return_indices"}
    if extra or bound.get("return_indices"):
        raise NotImplementedError("pool with a symbolic window")

    def per_axis(v: Any, default: Any) -> list[Any]:
        v = default if v is None or (isinstance(v, (list, tuple)) and not v) else v
        return list(v) if isinstance(v, (list, tuple)) else [v] * nd

    k = per_axis(bound["kernel_size"], None)
    st = per_axis(bound.get("stride"), bound["kernel_size"])
    pad = per_axis(bound.get("padding", 0), 0)
    dil = per_axis(bound.get("dilation", 1), 1)
    ceil = bool(bound.get("ceil_mode", False))
    shape = list(x.shape)
    for i in range(nd):
        n = shape[x.dim() - nd + i]
        if pad[i] * 2 > k[i]:
            raise RuntimeError("pad should be at most half of effective kernel size")
        span = n + 2 * pad[i] - dil[i] * (k[i] - 1) - 1
        if span < 0:
            raise RuntimeError("Given input size too small: output size is too small")
        out = (span + (st[i] - 1 if ceil else 0)) // st[i] + 1
        if ceil and (out - 1) * st[i] >= n + pad[i]:
            out = out - 1
        if out < 1:
            raise RuntimeError("Output size is too small")
        shape[x.dim() - nd + i] = out
    return x.new_empty(shape)


# -- shape-preserving ops -----------------------------------------------------------------------

#: Elementwise functions of one tensor: the output is laid out as the input (``empty_like``).
_UNARY = {
    F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.elu, F.selu, F.celu, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.softplus, F.softsign, F.tanhshrink, F.logsigmoid,
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.erf, torch.abs, torch.neg,
    torch.Tensor.relu, torch.Tensor.sigmoid, torch.Tensor.tanh, torch.Tensor.exp,
    torch.Tensor.abs, torch.Tensor.neg, torch.Tensor.__neg__, F.sigmoid, F.tanh,
}
_INPLACE = {F.relu_, F.leaky_relu_, F.elu_, torch.relu_, torch.Tensor.relu_,
            torch.Tensor.sigmoid_, torch.Tensor.tanh_}
_DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
            F.feature_alpha_dropout}


def shape_preserving(func: Callable, args: tuple, kwargs: dict) -> Any:
    """The output of ``func`` when it keeps its input's shape and the input's layout is known,
    else None (run the op itself)."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not _is_fake(x):
        return None
    if func in _INPLACE or (func in _UNARY and kwargs.get("inplace")) or (
            func in _DROPOUT and not _training(args, kwargs)):
        return x  # in place; dropout in eval returns its input itself
    if func in _UNARY:
        if len(args) > 1 and isinstance(args[1], bool) and args[1]:  # relu(x, True)
            return x
        return torch.empty_like(x)
    if not _contiguous(x):
        return None
    check = _NORM_CHECKS.get(func)
    if check is not None:
        return x.new_empty(x.shape) if check(x, args, kwargs) else None
    if func in (F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax):
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if isinstance(dim, int) and -x.dim() <= dim < x.dim() and kwargs.get("dtype") is None \
                and (len(args) < 4 or args[3] is None):
            return x.new_empty(x.shape)
    return None


def _is_fake(x: torch.Tensor) -> bool:
    return type(x).__name__ == "FakeTensor"


def _training(args: tuple, kwargs: dict) -> bool:
    training = kwargs.get("training", args[2] if len(args) > 2 else True)
    return bool(training)


def _contiguous(x: torch.Tensor) -> bool:
    """Contiguous by the strides' own expressions (asking ``is_contiguous`` would guard): each
    stride is the product of the later sizes, as PyTorch writes it (``Max(1, size)``)."""
    import sympy
    from torch.utils._sympy.functions import Max

    plain: Any = sympy.Integer(1)
    clamped: Any = sympy.Integer(1)
    for size, stride in reversed(list(zip(x.shape, x.stride()))):
        have = sympy.sympify(_expr(stride))
        if have != plain and have != clamped:
            return False
        size = sympy.sympify(_expr(size))
        plain, clamped = plain * size, clamped * Max(1, size)
    return True


def _expr(value: Any) -> Any:
    return value.node.expr if isinstance(value, torch.SymInt) else value


def _channels(x: torch.Tensor) -> int | None:
    c = x.shape[1] if x.dim() >= 2 else None
    return c if isinstance(c, int) else None


def _sized(tensors: list[Any], numel: int) -> bool:
    """Every given parameter tensor holds ``numel`` values (a literal count)."""
    return all(t is None or (isinstance(t, torch.Tensor) and t.dim() == 1
                             and isinstance(t.shape[0], int) and t.shape[0] == numel)
               for t in tensors)


def _param(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _layer_norm_ok(x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    shape = _param(args, kwargs, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape or ())
    if not shape or not all(isinstance(d, int) for d in shape) or len(shape) > x.dim():
        return False
    weight, bias = _param(args, kwargs, 2, "weight"), _param(args, kwargs, 3, "bias")
    for t in (weight, bias):
        if t is not None and tuple(t.shape) != shape:
            return False
    trailing = x.shape[x.dim() - len(shape):]
    if any(have != want for have, want in zip(trailing, shape)):  # guards, as the kernel's check
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size"
                           f"{list(x.shape)}")
    return True


def _batch_norm_ok(x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    c = _channels(x)
    params = [_param(args, kwargs, i, n) for i, n in
              ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    if c is None or not _sized(params, c):
        return False
    if _param(args, kwargs, 5, "training", False):
        F._verify_batch_size(x.size())
    return True


def _instance_norm_ok(x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    c = _channels(x)
    params = [_param(args, kwargs, i, n) for i, n in
              ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    if c is None or x.dim() < 3 or not _sized(params, c):
        return False
    if _param(args, kwargs, 5, "use_input_stats", True):
        F._verify_spatial_size(x.size())
    return True


def _group_norm_ok(x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    c = _channels(x)
    groups = _param(args, kwargs, 1, "num_groups")
    params = [_param(args, kwargs, 2, "weight"), _param(args, kwargs, 3, "bias")]
    if c is None or not isinstance(groups, int) or groups <= 0 or c % groups:
        return False
    if not _sized(params, c):
        return False
    F._verify_batch_size([x.size(0) * c // groups, groups] + list(x.size()[2:]))
    return True


_NORM_CHECKS: dict[Callable, Callable[[torch.Tensor, tuple, dict], bool]] = {
    F.layer_norm: _layer_norm_ok,
    F.batch_norm: _batch_norm_ok,
    F.instance_norm: _instance_norm_ok,
    F.group_norm: _group_norm_ok,
}


# -- index bounds ----------------------------------------------------------------------------

INDEX_FUNCS = {torch.index_select, torch.Tensor.index_select, torch.gather, torch.Tensor.gather,
               torch.Tensor.__getitem__}


def index_bounds(func: Callable, args: tuple, kwargs: dict,
                 value_of: Callable[[torch.Tensor], torch.Tensor | None] = lambda t: None,
                 ) -> tuple[str | None, bool]:
    """Meta kernels never read index values, so a constant index past a size-dependent dim
    (``x.index_select(2, rows)``, ``x[:, :, rows]``) would pass at every size. For an index
    held as a real tensor (a buffer, a constant) this checks its bounds against the symbolic
    size with ``torch._check``, as a guard PyTorch records; returns a reason when the index
    values are unknown (built on the meta device, or computed in forward) with whether the
    indexed dim is a symbol here, so that such a run is not taken as exact. A literal size is
    checked too: the literal re-run that confirms a failure must fail as the real kernel does."""
    for x, dim, index, negatives_ok in _indexed_dims(func, args, kwargs):
        size = x.shape[dim]
        if index.numel() == 0 or index.dtype == torch.bool or index.is_floating_point():
            continue
        symbolic = isinstance(size, torch.SymInt)
        known = value_of(index)  # a meta-built buffer's values, recomputed on the CPU
        if known is not None:
            index = known
        elif _is_fake(index) or index.device.type == "meta":
            return (f"{getattr(func, '__name__', 'indexing')} picks positions whose values "
                    "archlint cannot read; meta kernels do not check their bounds"), symbolic
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # a real index: read its values outside the fake mode
            hi, lo = int(index.max()), int(index.min())
        torch._check(size > hi, lambda: f"index {hi} is out of bounds for dimension {dim} "
                     f"with size {size}")
        if lo < 0:
            torch._check(negatives_ok and size >= -lo, lambda: f"index {lo} is out of bounds "
                         f"for dimension {dim} with size {size}")
    return None, False


def _indexed_dims(func: Callable, args: tuple, kwargs: dict):
    """(tensor, dim, integer index tensor, negative indices allowed) per indexed dim."""
    if func is torch.Tensor.__getitem__:
        x, key = args[0], args[1]
        if not isinstance(x, torch.Tensor):
            return
        items = list(key) if isinstance(key, tuple) else [key]
        consumed = sum(0 if (i is None or i is Ellipsis) else
                       (i.dim() if isinstance(i, torch.Tensor) and i.dtype == torch.bool else 1)
                       for i in items)
        dim = 0
        for item in items:
            if item is Ellipsis:
                dim += x.dim() - consumed
            elif item is None:
                continue
            elif isinstance(item, torch.Tensor):
                if item.dtype == torch.bool:
                    dim += item.dim()
                    continue
                if dim < x.dim():
                    yield x, dim, item, True
                dim += 1
            else:
                dim += 1
        return
    names = ("input", "dim", "index")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    x, dim, index = bound.get("input"), bound.get("dim"), bound.get("index")
    if isinstance(x, torch.Tensor) and isinstance(dim, int) and isinstance(index, torch.Tensor) \
            and x.dim() > 0:
        yield x, dim % x.dim(), index, False
