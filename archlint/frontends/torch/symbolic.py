"""The symbolic engine: run a model's own ``forward`` with the input sizes as symbols.

One run (:func:`symbolic_run`) builds a ``ShapeEnv`` and a ``FakeTensorMode`` over it, makes
fake inputs whose batch and spatial dims are symbols (dims below 2 stay literal: PyTorch
specializes sizes 0 and 1), and calls the model's eager ``forward`` under the mode. Python in
``forward`` runs as in eager mode (``torch.jit.isinstance``, ``is_scripting`` and ``is_compiling``
say what they say there); every decision on a size becomes a guard in ``shape_env.guards``,
which this module records with the user frame that made it. The result says what happened at
this point (ran, raised and where, or could not be modelled), the guards under which every other
size takes the same path, and the output's size expressions.

Three things a plain fake run gets wrong are fixed here:

* ``F.interpolate(scale_factor=s)`` with a symbolic ``s`` would pass ``s`` to a C++ kernel as a
  double, specializing it to its value at this size; the size is computed instead exactly as
  PyTorch does (``trunc(float(in) * s)``, in float64) and passed as ``size=``;
* checks real kernels make and meta kernels skip (:mod:`archlint.frontends.torch.parity`) run on
  every function call;
* print output of user code goes to stderr, warnings are muted.

The sweep over all sizes (which sizes share a path, which re-runs to make) is in
:mod:`archlint.passes.symbolic_sizes`; this module only runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from archlint.frontends.torch.locate import _FileNames, _is_user_file, _one_line
from archlint.frontends.torch.parity import check_cpu_only_rules

#: Axis names of an input's dims past (batch, channels), by spatial rank.
AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
LETTERS = {"batch": "N", "length": "L", "depth": "D", "height": "H", "width": "W"}

_TORCH_INIT = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "__init__.py")


@dataclass
class Guard:
    """One decision on a size: ``expr`` (a sympy boolean over the input symbols) held here."""

    expr: Any
    frame: tuple[str, int] | None


@dataclass
class SymbolicRun:
    """What one symbolic run saw; see the module docs."""

    point: dict[str, int]                  # axis name ("batch", "height", ...) -> value here
    symbols: dict[Any, str] = field(default_factory=dict)  # sympy symbol -> axis name
    fixed: dict[str, int] = field(default_factory=dict)    # axes traced as literals (< 2)
    guards: list[Guard] = field(default_factory=list)
    ok: bool = False
    error: str | None = None               # why the model fails here (PyTorch's words)
    error_frame: tuple[str, int] | None = None
    python_check: bool = False             # raised by a raise/assert/torch._check in Python
    unsupported: str | None = None         # archlint could not model this run (undecided)
    out_spatial: tuple[Any, ...] | None = None  # output spatial sizes (sympy), rank-matched
    batch_lock: tuple[str, int, str] | None = None  # (file, line, call) dropping the batch
    point_ok: bool = False                 # unsupported, but a literal run at the point works
    seconds: float = 0.0


def _literal_run(module: nn.Module, shapes: list[tuple[int, ...]], dtypes: list[torch.dtype],
                 point: dict[str, int], files: _FileNames) -> SymbolicRun:
    return symbolic_run(module, shapes, dtypes, point, files, literal=True)


def symbolic_run(
    module: nn.Module,
    shapes: list[tuple[int, ...]],
    dtypes: list[torch.dtype],
    point: dict[str, int],
    files: _FileNames,
    literal: bool = False,
) -> SymbolicRun:
    """Run ``module`` at ``point`` (axis name -> size) with the sizes as symbols (as literals
    with ``literal``)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    started = time.perf_counter()
    run = SymbolicRun(point=dict(point))
    env = ShapeEnv()
    env.guards = _FramedGuards(run, files)
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    inputs = []
    param = next(iter(module.parameters()), None)
    device = param.device.type if param is not None else "meta"
    for shape, dtype in zip(shapes, dtypes):
        names = _axis_names(len(shape))
        sizes, dynamic = [], []
        for i, (name, example) in enumerate(zip(names, shape)):
            value = point.get(name, example) if name is not None else example
            sizes.append(value)
            is_symbol = name is not None and value >= 2 and not literal
            dynamic.append(DimDynamic.DYNAMIC if is_symbol else DimDynamic.STATIC)
            if name is not None and not is_symbol:
                run.fixed[name] = value
        context = StatelessSymbolicContext(dynamic_sizes=dynamic)
        fake = mode.from_tensor(torch.empty(sizes, dtype=dtype, device="meta"),
                                symbolic_context=context) if device == "meta" else \
            _fake_on(mode, sizes, dtype, device, context)
        for name, size in zip(names, fake.shape):
            if name is not None and isinstance(size, torch.SymInt):
                run.symbols[size.node.expr] = name
        inputs.append(fake)
    batch_symbols = {s for s, n in run.symbols.items() if n == "batch"}
    training = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with _quiet(), mode, _Calls(run, files, batch_symbols):
            output = module(*inputs)
        run.ok = True
        run.out_spatial = _spatial_output(output, len(shapes[0]))
    except Exception as exc:  # the model's own failure at this size, or an archlint limit
        _classify(run, exc, files)
    finally:
        for m, flag in training:
            m.training = flag
        run.seconds = time.perf_counter() - started
    for ra in _deferred_asserts(env):
        run.guards.append(Guard(ra, None))
    if not run.ok and not run.unsupported and run.symbols:
        _verify_failure(run, module, shapes, dtypes, point, files)
    return run


def _verify_failure(run: SymbolicRun, module: nn.Module, shapes: list[tuple[int, ...]],
                    dtypes: list[torch.dtype], point: dict[str, int], files: _FileNames) -> None:
    """A failure with symbols must also happen with the same sizes as literals; if that run
    works, the failure was an artefact of symbolic tracing: the point runs, its region is
    unknown."""
    literal = {axis: value for axis, value in point.items()}
    check = _literal_run(module, shapes, dtypes, literal, files)
    if check.ok:
        run.unsupported = f"symbolic tracing failed where a plain run works ({run.error})"
        run.point_ok = True


def _axis_names(rank: int) -> list[str | None]:
    spatial = AXIS_NAMES.get(rank - 2, ())
    return ["batch", None, *spatial] if spatial else [None] * rank


@contextlib.contextmanager
def _quiet():
    import logging
    import warnings

    # fake tensors log every failing meta kernel at ERROR level; a failing size is expected here
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _deferred_asserts(env: Any) -> list[Any]:
    found = []
    for asserts in getattr(env, "deferred_runtime_asserts", {}).values():
        found.extend(a.expr for a in asserts)
    return found


class _FramedGuards(list):
    """``shape_env.guards``, noting the innermost user frame of each guard as it is added."""

    def __init__(self, run: SymbolicRun, files: _FileNames):
        super().__init__()
        self._run = run
        self._files = files

    def append(self, guard: Any) -> None:
        super().append(guard)
        self._run.guards.append(Guard(guard.expr, _user_frame(sys._getframe(1), self._files)))


def _user_frame(frame: Any, files: _FileNames) -> tuple[str, int] | None:
    while frame is not None:
        name = frame.f_code.co_filename
        if _is_user_file(name):
            return files.display(name), frame.f_lineno
        frame = frame.f_back
    return None


_UNSUPPORTED_NAMES = (
    "GuardOnDataDependentSymNode", "DataDependentOutputException", "DynamicOutputShapeException",
    "UnsupportedOperatorException", "UnsupportedFakeTensorException", "MetadataMismatchError",
)


def _classify(run: SymbolicRun, exc: BaseException, files: _FileNames) -> None:
    """ok=False with the reason and frame, or unsupported when archlint cannot model it."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if _is_user_file(f.filename)]
    if user:
        run.error_frame = (files.display(user[-1].filename), user[-1].lineno)
    text = f"{type(exc).__name__}: {_one_line(exc)}"
    if type(exc).__name__ in _UNSUPPORTED_NAMES or isinstance(exc, NotImplementedError) or (
        "concrete integers" in str(exc)) or (
        "meta" in str(exc).lower() and "tensor" in str(exc).lower()
    ):
        run.unsupported = text
        return
    run.error = _one_line(exc)
    innermost = frames[-1] if frames else None
    by_check = any(f.filename == _TORCH_INIT and f.name.startswith("_check") and i > 0
                   and _is_user_file(frames[i - 1].filename) for i, f in enumerate(frames))
    raised_here = innermost is not None and _is_user_file(innermost.filename) and (
        (innermost.line or "").lstrip().startswith(("raise", "assert")))
    run.python_check = by_check or raised_here
    names = {str(sym): LETTERS.get(axis, axis) for sym, axis in run.symbols.items()}
    for sym in sorted(names, key=len, reverse=True):
        run.error = run.error.replace(sym, names[sym])


def _spatial_output(output: Any, rank: int) -> tuple[Any, ...] | None:
    """The spatial sizes of the first output tensor of the input's rank (sympy or int)."""
    stack = [output]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.Tensor):
            if item.dim() == rank and rank >= 3:
                return tuple(_expr(s) for s in item.shape[2:])
            continue
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "to_tuple"):  # transformers' ModelOutput
            stack.extend(item.to_tuple())
    return None


def _expr(size: Any) -> Any:
    return size.node.expr if isinstance(size, torch.SymInt) else int(size)


_LAYOUT_FUNCS = {
    torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.expand,
    torch.Tensor.flatten, torch.flatten, torch.Tensor.repeat,
}


class _Calls(TorchFunctionMode):
    """Per-call hooks: symbolic ``interpolate`` sizes, CPU-only checks, batch-dropping layout."""

    def __init__(self, run: SymbolicRun, files: _FileNames, batch_symbols: set[Any]):
        super().__init__()
        self.run = run
        self.files = files
        self.batch_symbols = batch_symbols
        self.literal_batch: dict[int, tuple[torch.Tensor, tuple[str, int, str]]] = {}

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is F.interpolate:
            args, kwargs = _symbolic_interpolate_size(args, kwargs)
            return _interpolate(args, kwargs)
        if func is F.pad:
            return _pad(args, kwargs)
        if func in _POOLS and _has_symbolic_window(args, kwargs):
            return _pool(func, args, kwargs)
        with contextlib.suppress(Exception):
            check_cpu_only_rules("function", func, args, kwargs)
        try:
            out = func(*args, **kwargs)
        except Exception:
            if self.batch_symbols and self.run.batch_lock is None:
                self._blame_literal_batch(args)
            raise
        if self.batch_symbols and func in _LAYOUT_FUNCS and self.run.batch_lock is None:
            self._note_batch_lock(func, args, out)
        return out

    def _blame_literal_batch(self, args: tuple) -> None:
        """A call failing on a batch-1 tensor made by expand/view(1, ...) next to a batched one:
        the fix is where the literal batch was written."""
        tensors = [a for a in _flat(args) if isinstance(a, torch.Tensor) and a.dim() > 0]
        if not any(_mentions(t.shape[0], self.batch_symbols) for t in tensors):
            return
        for t in tensors:
            made = self.literal_batch.get(id(t))
            if made is not None and made[0] is t:
                self.run.batch_lock = made[1]
                return

    def _note_batch_lock(self, func: Callable, args: tuple, out: Any) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
            return
        if x.dim() == 0 or out.dim() == 0:
            return
        had = _mentions(x.shape[0], self.batch_symbols)
        if not had and out.shape[0] == 1 and not isinstance(out.shape[0], torch.SymInt):
            frame = _user_frame(sys._getframe(1), self.files)
            if frame is not None:
                name = getattr(func, "__name__", str(func))
                self.literal_batch[id(out)] = (out, (frame[0], frame[1], name))
            return
        if not had or _mentions(out.shape[0], self.batch_symbols):
            return
        if any(_mentions(s, self.batch_symbols) for s in out.shape[1:]) or isinstance(
                out.shape[0], torch.SymInt):
            # the batch moved into a later dim (view(1, -1), reshape(1, C, -1)): locked
            frame = _user_frame(sys._getframe(1), self.files)
            if frame is not None:
                name = getattr(func, "__name__", str(func))
                self.run.batch_lock = (frame[0], frame[1], name)


def _mentions(size: Any, symbols: set[Any]) -> bool:
    return isinstance(size, torch.SymInt) and bool(size.node.expr.free_symbols & symbols)


def _symbolic_interpolate_size(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
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


def _interpolate(args: tuple, kwargs: dict) -> Any:
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


def _flat(items: Any) -> list[Any]:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flat(item))
        else:
            out.append(item)
    return out


def _fake_on(mode: Any, sizes: list[int], dtype: torch.dtype, device: str, context: Any) -> Any:
    """A symbolic fake input on a real device: built from a meta tensor, then its fake device
    set (no data is ever allocated)."""
    fake = mode.from_tensor(torch.empty(sizes, dtype=dtype, device="meta"), symbolic_context=context)
    fake.fake_device = torch.device(device)
    return fake


def _pad(args: tuple, kwargs: dict) -> Any:
    """``F.pad``; with symbolic pad widths (a composite kernel takes only concrete ones), an
    empty tensor of the constant-mode output shape after PyTorch's own size check."""
    try:
        return F.pad(*args, **kwargs)
    except RuntimeError as exc:
        if "concrete integers" not in str(exc):
            raise
    params = ("input", "pad", "mode", "value")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    x, pad, mode = bound["input"], list(bound["pad"]), bound.get("mode", "constant")
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


_POOLS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
          F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}


def _has_symbolic_window(args: tuple, kwargs: dict) -> bool:
    window = list(args[1:3]) + [kwargs.get("kernel_size"), kwargs.get("stride")]
    return any(isinstance(v, torch.SymInt) or (isinstance(v, (list, tuple)) and any(
        isinstance(e, torch.SymInt) for e in v)) for v in window)


def _pool(func: Callable, args: tuple, kwargs: dict) -> Any:
    """A pool whose window is a symbolic size (``avg_pool2d(y, y.shape[2:])``): the kernel
    would specialize it, so the output shape comes from PyTorch's formula
    ``floor((n + 2p - d(k - 1) - 1) / s) + 1`` (ceil mode: PyTorch's last-window rule), with its
    checks."""
    nd = _POOLS[func]
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
            raise RuntimeError(f"Given input size too small: output size is too small")
        out = (span + (st[i] - 1 if ceil else 0)) // st[i] + 1
        if ceil and (out - 1) * st[i] >= n + pad[i]:
            out = out - 1
        if out < 1:
            raise RuntimeError("Output size is too small")
        shape[x.dim() - nd + i] = out
    return x.new_empty(shape)
