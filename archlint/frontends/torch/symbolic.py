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
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from archlint.frontends.torch import symbolic_fold, symbolic_ops as ops
from archlint.frontends.torch.locate import _FileNames, _is_user_file, _one_line
from archlint.frontends.torch.parity import check_cpu_only_rules
from archlint.frontends.torch.symbolic_pin import Pin, folded_remainders, pinned_inputs

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
    #: symbol -> its value over the point's axis value (an input whose example size is half the
    #: first input's gets n/2); absent means 1
    ratios: dict[Any, Fraction] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)    # axes traced as literals
    guards: list[Guard] = field(default_factory=list)
    ok: bool = False
    error: str | None = None               # why the model fails here (PyTorch's words)
    error_frame: tuple[str, int] | None = None
    python_check: bool = False             # raised by a raise/assert/torch._check in Python
    unsupported: str | None = None         # archlint could not model this run (undecided)
    out_spatial: tuple[Any, ...] | None = None  # output spatial sizes (sympy), rank-matched
    batch_lock: tuple[str, int, str] | None = None  # (file, line, call) dropping the batch
    point_ok: bool = False                 # unsupported, but a literal run at the point works
    #: call sites picking positions by index values archlint cannot read -> whether the indexed
    #: dim was size-dependent in this run (a literal run cannot tell; the partition compares)
    unknown_index_sites: dict[tuple[str, int], bool] = field(default_factory=dict)
    seconds: float = 0.0
    #: pinned symbols: q -> its Pin (the axis size is m*q + r, see symbolic_pin)
    pins: dict[Any, Pin] = field(default_factory=dict)
    #: stopped at its deadline; the sizes it saw so far are in ``seen_sizes``
    too_slow: bool = False
    seen_sizes: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class InputLeaf:
    """One tensor input: its example shape and dtype, and per dim the axis of the first spatial
    input it moves with and in what proportion (None: kept at the example)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    axes: tuple[tuple[str, Fraction] | None, ...]

    def size_at(self, dim: int, point: dict[str, int]) -> int | None:
        """This dim's size at ``point``; None when the proportion gives no whole size."""
        axis = self.axes[dim]
        if axis is None or axis[0] not in point:
            return self.shape[dim]
        value = point[axis[0]] * axis[1]
        return int(value) if value.denominator == 1 and value >= 1 else None


def input_leaves(shapes: list[tuple[int, ...]], dtypes: list[torch.dtype]) -> list[InputLeaf]:
    """The leaves of an example, each dim tied to the first spatial input's axes.

    The first input of rank >= 3 names the axes (batch, channels, spatial...). Another input of
    the same rank moves each spatial dim in proportion to that axis (the same size, or half of
    it, as its example has), and every input of rank >= 2 whose first dim is the example batch
    moves with the batch. Anything else stays at its example size."""
    primary = next((s for s in shapes if len(s) >= 3 and AXIS_NAMES.get(len(s) - 2)), None)
    leaves = []
    for shape, dtype in zip(shapes, dtypes):
        axes: list[tuple[str, Fraction] | None] = [None] * len(shape)
        if primary is not None and len(shape) >= 2 and shape[0] == primary[0]:
            axes[0] = ("batch", Fraction(1))
        if primary is not None and len(shape) == len(primary):
            for i, name in enumerate(AXIS_NAMES[len(shape) - 2]):
                if shape[i + 2] > 0:
                    axes[i + 2] = (name, Fraction(shape[i + 2], primary[i + 2]))
        leaves.append(InputLeaf(tuple(shape), dtype, tuple(axes)))
    return leaves


def example_point(leaves: list[InputLeaf]) -> dict[str, int]:
    """axis name -> size at the example, from the first spatial input."""
    for leaf in leaves:
        if len(leaf.shape) >= 3 and all(a is not None and a[1] == 1 for a in leaf.axes[2:]):
            point = {name: leaf.shape[i + 2]
                     for i, name in enumerate(AXIS_NAMES[len(leaf.shape) - 2])}
            if leaf.axes[0] is not None:
                point = {"batch": leaf.shape[0], **point}
            return point
    return {}


def symbolic_run(
    module: nn.Module,
    leaves: list[InputLeaf],
    call: Callable[[list[Any]], tuple[tuple, dict]],
    point: dict[str, int],
    files: _FileNames,
    symbolic: frozenset[str] | None = None,
    values: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    pins: dict[str, Pin] | None = None,
    deadline: float | None = None,
) -> SymbolicRun:
    """Run ``module`` at ``point`` (axis name -> size) with the sizes of the axes in ``symbolic``
    (default: all) as symbols, the others as literals. ``call`` turns the input tensors (one
    per leaf) into forward's arguments.

    The module's attributes are put back afterwards: some models remember the last input size
    (Hugging Face's Swin shrinks its window for a small input, for good).

    ``pins`` (axis -> :class:`~archlint.frontends.torch.symbolic_pin.Pin`) writes those axes as
    ``m*q + r`` (see :mod:`archlint.frontends.torch.symbolic_pin`). A run past ``deadline`` CPU
    seconds stops, ``unsupported`` and ``too_slow``, with the guards recorded so far and the
    sizes of the call it stopped at (``seen_sizes``)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    started, started_cpu = time.perf_counter(), time.process_time()
    run = SymbolicRun(point=dict(point))
    env = ShapeEnv()
    env.guards = _FramedGuards(run, files)
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    inputs = []
    param = next(iter(module.parameters()), None)
    device = param.device.type if param is not None else "meta"
    if pins:
        inputs = pinned_inputs(mode, leaves, point, pins, symbolic, device, run)
    for leaf in leaves if not pins else ():
        sizes, dynamic, names = [], [], []
        for i, axis in enumerate(leaf.axes):
            value = leaf.size_at(i, point)
            if value is None:
                raise ValueError(f"no whole size for input {leaf.shape} at {point}")
            name = axis[0] if axis is not None and axis[0] in point else None
            is_symbol = name is not None and value >= 2 and (symbolic is None or name in symbolic)
            sizes.append(value)
            names.append(name)
            dynamic.append(DimDynamic.DYNAMIC if is_symbol else DimDynamic.STATIC)
            if name is not None and not is_symbol:
                run.fixed[name] = point[name]
        context = StatelessSymbolicContext(dynamic_sizes=dynamic)
        fake = mode.from_tensor(torch.empty(sizes, dtype=leaf.dtype, device="meta"),
                                symbolic_context=context) if device == "meta" else \
            _fake_on(mode, sizes, leaf.dtype, device, context)
        for i, (name, size) in enumerate(zip(names, fake.shape)):
            if name is not None and isinstance(size, torch.SymInt):
                run.symbols[size.node.expr] = name
                ratio = leaf.axes[i][1]
                if ratio != 1:
                    run.ratios[size.node.expr] = ratio
        inputs.append(fake)
    batch_symbols = {s for s, n in run.symbols.items() if n == "batch"}
    rank = max((len(leaf.shape) for leaf in leaves), default=0)
    with _state_kept(module):
        try:
            args, kwargs = call(inputs)
            calls = _Calls(run, files, batch_symbols, values)
            calls.deadline = deadline and (started_cpu + deadline, deadline)
            with _quiet(), mode, calls, folded_remainders() if pins else contextlib.nullcontext():
                output = module(*args, **kwargs)
            run.ok = True
            run.out_spatial = _spatial_output(output, rank)
        except Exception as exc:  # the model's own failure at this size, or an archlint limit
            _classify(run, exc, files)
        finally:
            run.seconds = time.perf_counter() - started
    for ra in _deferred_asserts(env):
        run.guards.append(Guard(ra, None))
    if run.too_slow:
        return run
    if not run.ok and not run.unsupported and run.symbols:
        _verify_failure(run, module, leaves, call, point, files, values)
    return run


@contextlib.contextmanager
def _state_kept(module: nn.Module):
    """Every submodule's attributes, parameters, buffers, children and mode as they were."""
    saved = [(m, dict(m.__dict__), dict(m._parameters), dict(m._buffers), dict(m._modules))
             for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, attrs, params, buffers, children in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for live, kept in ((m._parameters, params), (m._buffers, buffers),
                               (m._modules, children)):
                live.clear()
                live.update(kept)


def _verify_failure(run: SymbolicRun, module: nn.Module, leaves: list[InputLeaf],
                    call: Callable, point: dict[str, int], files: _FileNames,
                    values: dict[int, tuple[torch.Tensor, torch.Tensor]] | None) -> None:
    """A failure with symbols must also happen with the same sizes as literals; if that run
    works, the failure was an artefact of symbolic tracing: the point runs, its region is
    unknown."""
    check = symbolic_run(module, leaves, call, point, files, symbolic=frozenset(),
                         values=values)
    if check.ok:
        run.unsupported = f"symbolic tracing failed where a plain run works ({run.error})"
        run.point_ok = True


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
    if isinstance(exc, _TooSlow):
        run.unsupported = f"a symbolic run took over {exc.args[0]:.0f} CPU seconds"
        run.too_slow = True
        return
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

    def __init__(self, run: SymbolicRun, files: _FileNames, batch_symbols: set[Any],
                 values: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.run = run
        self.files = files
        self.batch_symbols = batch_symbols
        # id(tensor) -> (that tensor, its values on the CPU): integer buffers built on the meta
        # device, and what literal-sized integer ops make of them (an index buffer's view(-1))
        self.values = dict(values or {})
        self.literal_batch: dict[int, tuple[torch.Tensor, tuple[str, int, str]]] = {}

    deadline: tuple[float, float] | None = None  # (process time to stop at, the limit)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if self.deadline and time.process_time() > self.deadline[0]:
            self.run.seen_sizes = _symbolic_sizes(args)
            raise _TooSlow(self.deadline[1])
        if func is F.interpolate:
            args, kwargs = ops.symbolic_interpolate_size(args, kwargs)
            return ops.interpolate(args, kwargs)
        if func is F.pad:
            return ops.pad(args, kwargs)
        if func is F.unfold:
            return symbolic_fold.unfold(args, kwargs)
        if func is F.fold:
            return symbolic_fold.fold(args, kwargs)
        if func in ops.POOLS and ops.has_symbolic_window(args, kwargs):
            return ops.pool(func, args, kwargs)
        with contextlib.suppress(Exception):
            check_cpu_only_rules("function", func, args, kwargs)
        if func in ops.INDEX_FUNCS:
            unknown, symbolic_dim = ops.index_bounds(func, args, kwargs, self._value_of)
            if unknown:
                frame = _user_frame(sys._getframe(1), self.files)
                if frame is not None:
                    self.run.unknown_index_sites[frame] = symbolic_dim
                if symbolic_dim and not self.run.unsupported:
                    self.run.unsupported = unknown + (f" (at {frame[0]}:{frame[1]})" if frame else "")
        if not self.batch_symbols:
            out = ops.shape_preserving(func, args, kwargs)
            if out is not None:
                return out
        try:
            out = func(*args, **kwargs)
        except Exception:
            if self.batch_symbols and self.run.batch_lock is None:
                self._blame_literal_batch(args)
            raise
        if self.values:
            self._shadow(func, args, kwargs, out)
        if self.batch_symbols and func in _LAYOUT_FUNCS and self.run.batch_lock is None:
            self._note_batch_lock(func, args, out)
        return out

    def _value_of(self, t: torch.Tensor) -> torch.Tensor | None:
        kept = self.values.get(id(t))
        return kept[1] if kept is not None and kept[0] is t else None

    def _shadow(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        """The CPU values of an integer output whose tensor operands all have known values and
        whose other arguments are literals (no symbolic size): the same call on the values."""
        if not isinstance(out, torch.Tensor) or out.is_floating_point() or out.is_complex():
            return
        if any(isinstance(s, torch.SymInt) for s in out.shape) or out.numel() > 1 << 20:
            return
        flat = _flat([*args, *kwargs.values()])
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        if not tensors or any(self._value_of(t) is None for t in tensors) or any(
                isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)) for a in flat):
            return
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        from torch.utils._pytree import tree_map

        swap = lambda a: self._value_of(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        with contextlib.suppress(Exception), unset_fake_temporarily():
            value = func(*tree_map(swap, args), **tree_map(swap, kwargs))
            if isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(out.shape):
                self.values[id(out)] = (out, value)

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


class _TooSlow(Exception):
    """A run past its deadline (see ``symbolic_run``)."""


def _symbolic_sizes(args: Any) -> list[Any]:
    """The symbolic sizes (sympy) of the tensors among ``args``: what the slow call works on."""
    return [s.node.expr for t in _flat(list(args)) if isinstance(t, torch.Tensor)
            for s in t.shape if isinstance(s, torch.SymInt)]


def _mentions(size: Any, symbols: set[Any]) -> bool:
    return isinstance(size, torch.SymInt) and bool(size.node.expr.free_symbols & symbols)


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
