"""PyTorch frontend: a ``.py`` file or an ``nn.Module`` -> archlint graphs.

Steps for one file:

1. import it as a fresh module (its folder on ``sys.path``), recording where every
   ``nn.Module`` object is constructed;
2. find the models (``--model NAME``, else module-level instances, else zero-argument
   ``nn.Module`` subclasses defined in the file) and build classes on the meta device;
3. choose the example input (``--input-shape``, ``example_inputs``, ``example_input`` in the file,
   ``[tool.archlint]``, else a shape inferred from the first layer);
4. trace with ``torch.fx`` (stack traces on) and propagate shapes node by node on meta tensors,
   keeping going past a failing node; when fx cannot trace, run ``forward`` on meta tensors under
   a ``TorchFunctionMode`` instead;
5. describe every op in the IR of :mod:`archlint.graph`.

Graph-level keys this frontend adds to ``g.graph`` (besides the IR's own):

``module_factory``  zero-argument callable that rebuilds the model with real weights (the class or
                    factory the model came from), or None when the model is a given instance;
``module``          that instance (module-level or passed to :func:`capture_module`), else None;
``traced_module``   the object that was traced (meta-built unless the user gave it);
``graph_module``    the ``fx.GraphModule`` traced from it (None after an eager capture);
``fx_names``        fx node name -> IR node name (re-trace with :func:`trace` to get the same
                    names on a real module);
``input_dtypes``    dtype name per input (``int64`` for a model whose first layer is Embedding).

The frontend describes; it never judges. Only this module imports torch.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import math
import operator
import os
import re
import sys
import textwrap
import traceback
import types
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from archlint.config import Options, load_config
from archlint.deadline import TimedOut, deadline
from archlint.frontends import Capture, TargetError
from archlint.graph import Attrs, Location, add_op, new_graph

__all__ = ["capture_file", "capture_module", "trace"]

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_ARCHLINT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_module_ids = itertools.count()


def _defer_dynamo_import() -> None:
    """Stop the Python meta kernels from importing torch._dynamo (~1 s CPU) when nothing compiles.

    Most meta kernels are Python references wrapped in ``torch._disable_dynamo``, whose first
    call imports torch._dynamo only to build a "run this uncompiled" wrapper, and caches that
    wrapper on the function as ``__dynamo_disable``. We pre-fill that cache with a wrapper that
    calls the reference directly while torch._dynamo is not loaded (then nothing can be compiling
    it) and builds the real one, exactly as torch would, once it is. Behaviour is unchanged; only
    an import that cannot matter is skipped. If torch changes these internals, nothing matches
    and the import simply happens as before.
    """
    import gc

    from torch import _compile

    inner_code = _compile._disable_dynamo(lambda: None).__code__
    if inner_code.co_freevars != ("fn", "recursive"):
        return
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__ is inner_code and obj.__closure__:
            fn, recursive = (cell.cell_contents for cell in obj.__closure__)
            if getattr(fn, "__dynamo_disable", None) is None:
                fn.__dynamo_disable = _lazy_dynamo_disable(fn, recursive)


def _lazy_dynamo_disable(fn: Callable[..., Any], recursive: bool) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        disabled = torch._dynamo.disable(fn, recursive, wrapping=False)  # what torch caches
        fn.__dynamo_disable = disabled
        return disabled(*args, **kwargs)

    return call


def _warm_up_meta_kernels() -> None:
    """Run a few meta ops once at import, so that the first model does not pay the imports their
    first calls make (sympy, through ``torch._check``): the CLI imports this module before
    starting a target's time limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = torch.empty(1, 2, 4, 4, device="meta")
            stats = torch.empty(2, device="meta")
            y = torch.relu(x + x)
            F.batch_norm(y, stats, stats, training=False)
            torch.cat([y, x], 1).mean((2, 3))
    except Exception:  # a warm-up must never cost the import
        pass


_defer_dynamo_import()
_warm_up_meta_kernels()


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def capture_file(path: Path, options: Options, example_inputs: Any = None) -> list[Capture]:
    """Import ``path``, find its models and capture each one.

    Raises :class:`TargetError` when the file as a whole cannot be analyzed (syntax error, import
    raised or exited, no model found, ``--model`` not found).
    """
    path = Path(path)
    try:
        with deadline(options.timeout):
            return _capture_file(path, options, example_inputs)
    except TimedOut as exc:
        raise TargetError(f"{exc} importing and capturing {path.name}") from None


def _capture_file(path: Path, options: Options, example_inputs: Any) -> list[Capture]:
    files = _FileNames(path)
    sites = ConstructionSites(files)
    with _quiet_user_code(), _on_sys_path(path.resolve().parent):
        namespace = _import_file(path, sites)
        candidates = _discover(namespace, path, options.model)
        file_input = _file_example_input(namespace)
        built = [(c, *_build(c, sites)) for c in candidates]
        if options.model is None and all(c.kind == "class" for c in candidates):
            built = _drop_nested_classes(built)
        captures = []
        for candidate, module, error in built:
            if error is not None:
                captures.append(Capture(name=candidate.name, graph=None, error=error))
                continue
            specs = _chosen_inputs(options, example_inputs, file_input)
            capture = _capture(module, candidate.name, specs, str(path), files, sites)
            g = capture.graph
            if g is not None:
                factory = candidate.obj if candidate.kind in ("class", "factory") else None
                g.graph["module_factory"] = factory
                g.graph["module"] = candidate.obj if factory is None else None
            captures.append(capture)
    return captures


def capture_module(
    module: Any, example_inputs: Any, options: Options, name: str | None = None
) -> Capture:
    """Capture an ``nn.Module`` given through the Python API (its weights stay as they are)."""
    if not isinstance(module, nn.Module):
        raise TargetError(
            f"expected a path, an nn.Module or an onnx.ModelProto, got {type(module).__name__}"
        )
    name = name or type(module).__name__
    files = _FileNames(None)
    sites = ConstructionSites(files)
    specs = _chosen_inputs(options, example_inputs, None)
    try:
        with deadline(options.timeout), _quiet_user_code():
            capture = _capture(module, name, specs, None, files, sites)
    except TimedOut as exc:
        reason = f"{exc} capturing {name}"
        return Capture(name=name, graph=None, error=reason)
    if capture.graph is not None:
        capture.graph.graph["module"] = module
        capture.graph.graph["module_factory"] = None
    return capture


# --------------------------------------------------------------------------------------------
# Import, discovery and construction
# --------------------------------------------------------------------------------------------


class _FileNames:
    """Maps code filenames to what a Location shows: the target as the user spelled it."""

    def __init__(self, target: Path | None):
        self.target = target
        self._target_abs = os.path.abspath(target) if target is not None else None

    def display(self, filename: str) -> str:
        absolute = os.path.abspath(filename)
        if self._target_abs is not None and absolute == self._target_abs:
            return str(self.target)
        return absolute


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    absolute = os.path.abspath(filename)
    return not (absolute.startswith(_TORCH_DIR) or absolute.startswith(_ARCHLINT_DIR))


class ConstructionSites:
    """Where each ``nn.Module`` object was constructed, as ``(file, line)``.

    While :meth:`recording` is active, ``nn.Module.__init__`` notes the first stack frame outside
    torch and archlint that is not the object's own constructor chain: the user's
    ``self.up = nn.ConvTranspose2d(...)`` line, or the line inside ``nn.Sequential(...)`` that
    builds that child.
    """

    def __init__(self, files: _FileNames):
        self.files = files
        self._sites: "weakref.WeakKeyDictionary[nn.Module, tuple[str, int]]" = (
            weakref.WeakKeyDictionary()
        )

    def get(self, module: nn.Module) -> tuple[str, int] | None:
        return self._sites.get(module)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        original = nn.Module.__init__
        sites = self._sites
        files = self.files

        def init(module: nn.Module, *args: Any, **kwargs: Any) -> None:
            original(module, *args, **kwargs)
            try:
                if module not in sites:
                    site = _construction_site(module, sys._getframe(1))
                    if site is not None:
                        sites[module] = (files.display(site[0]), site[1])
            except TypeError:  # an object that cannot be weakly referenced
                pass

        nn.Module.__init__ = init  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.__init__ = original  # type: ignore[method-assign]


def _construction_site(module: nn.Module, frame: types.FrameType | None) -> tuple[str, int] | None:
    """The user line that chose this layer's arguments.

    That is the innermost user frame, unless it is a plain helper (``conv_bn_relu(...)``) called
    from a model's method or module-level code: then the helper's call site, since that is where
    the stride or dilation to fix is written (and one helper line would name every layer).
    """
    innermost = None
    while frame is not None:
        code = frame.f_code
        if _is_user_file(code.co_filename) and not _is_own_constructor(frame, module):
            if innermost is None:
                innermost = (code.co_filename, frame.f_lineno)
            if _chooses_layers(frame):
                return code.co_filename, frame.f_lineno
        frame = frame.f_back
    return innermost


def _chooses_layers(frame: types.FrameType) -> bool:
    """Module-level code, or a method of an nn.Module (its ``__init__``, a ``_make_layer``)."""
    code = frame.f_code
    if code.co_name == "<module>":
        return True
    if code.co_argcount == 0 or code.co_varnames[0] != "self":
        return False
    return isinstance(frame.f_locals.get("self"), nn.Module)


def _is_own_constructor(frame: types.FrameType, module: nn.Module) -> bool:
    code = frame.f_code
    if code.co_argcount == 0 or code.co_varnames[0] != "self":
        return False
    return frame.f_locals.get("self") is module


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """``folder`` first on sys.path; afterwards, forget the sibling modules imported from it, so
    that another target's ``layers.py`` is not mistaken for this one's."""
    saved = list(sys.path)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path[:] = saved
        prefix = str(folder) + os.sep
        for name in set(sys.modules) - before:
            file = getattr(sys.modules.get(name), "__file__", None) or ""
            if os.path.abspath(file).startswith(prefix) and not name.startswith("_archlint_model_"):
                del sys.modules[name]


@contextlib.contextmanager
def _quiet_user_code() -> Iterator[None]:
    """User prints go to stderr (stdout may carry JSON); warnings from tracing are muted."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_file(path: Path, sites: ConstructionSites) -> types.ModuleType:
    files = sites.files
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"cannot read {path}: {exc}") from None
    try:
        code = compile(text, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise TargetError(f"syntax error at {path}:{exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # null bytes
        raise TargetError(f"cannot parse {path}: {exc}") from None
    stem = re.sub(r"\W", "_", path.stem)
    module = types.ModuleType(f"_archlint_model_{next(_module_ids)}_{stem}")
    module.__file__ = str(path.resolve())
    sys.modules[module.__name__] = module  # dataclasses and pickling look the module up
    try:
        with sites.recording():
            exec(code, module.__dict__)
    except SystemExit as exc:
        raise TargetError(f"{path} called sys.exit({exc.code!r}) at import") from None
    except Exception as exc:
        where = _user_frame_of(exc, files)
        at = f" at {where}" if where else ""
        raise TargetError(
            f"importing {path} raised {type(exc).__name__}: {_one_line(exc)}{at}"
        ) from None
    return module


def _user_frame_of(exc: BaseException, files: _FileNames) -> str | None:
    """``file:line`` of the innermost user frame in ``exc``'s traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    if not frames:
        return None
    return f"{files.display(frames[-1].filename)}:{frames[-1].lineno}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = repr(exc.args[0])
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(exc).__name__


@dataclass
class _Candidate:
    name: str
    kind: str  # "instance" | "class" | "factory"
    obj: Any


def _discover(namespace: types.ModuleType, path: Path, model: str | None) -> list[_Candidate]:
    if model is not None:
        return [_named_candidate(namespace, path, model)]
    instances = _module_level_instances(namespace)
    if instances:
        return instances
    classes = [
        (name, obj)
        for name, obj in vars(namespace).items()
        if isinstance(obj, type)
        and issubclass(obj, nn.Module)
        and obj.__module__ == namespace.__name__
        and _defines_forward(obj)
        and not _is_loss(obj)
    ]
    if not classes:
        raise TargetError(
            f"no model found in {path}: define an nn.Module subclass or a module-level "
            "nn.Module instance, or name one with --model"
        )
    buildable = [_Candidate(n, "class", c) for n, c in classes if not _required_params(c)]
    if not buildable:
        needs = "; ".join(f"{n} needs {', '.join(_required_params(c))}" for n, c in classes)
        raise TargetError(
            f"no model found in {path}: every nn.Module class needs constructor arguments "
            f"({needs}); use --model with a zero-argument factory or set a module-level instance"
        )
    return buildable


def _named_candidate(namespace: types.ModuleType, path: Path, name: str) -> _Candidate:
    if not hasattr(namespace, name):
        raise TargetError(f"--model {name}: {path} has no attribute {name!r}")
    obj = getattr(namespace, name)
    if isinstance(obj, nn.Module):
        return _Candidate(name, "instance", obj)
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        needs = _required_params(obj)
        if needs:
            raise TargetError(
                f"--model {name}: class {name} needs constructor arguments ({', '.join(needs)}); "
                "name a zero-argument factory function instead"
            )
        return _Candidate(name, "class", obj)
    if callable(obj) and not isinstance(obj, type):
        needs = _required_params(obj)
        if needs:
            raise TargetError(
                f"--model {name}: {name}() needs arguments ({', '.join(needs)}); "
                "name a zero-argument factory function instead"
            )
        return _Candidate(name, "factory", obj)
    raise TargetError(
        f"--model {name}: {name} is a {type(obj).__name__}, not an nn.Module instance, "
        "an nn.Module class or a zero-argument factory"
    )


def _module_level_instances(namespace: types.ModuleType) -> list[_Candidate]:
    found: list[_Candidate] = []
    seen: set[int] = set()
    for name, obj in vars(namespace).items():
        if not isinstance(obj, nn.Module) or _is_loss(type(obj)) or _is_stateless_layer(obj):
            continue
        if not name.startswith("__") and id(obj) not in seen:
            seen.add(id(obj))
            found.append(_Candidate(name, "instance", obj))
    # A module-level instance that is part of another one is linted as part of it.
    inside: set[int] = set()
    for c in found:
        inside.update(id(m) for m in c.obj.modules() if m is not c.obj)
    return [c for c in found if id(c.obj) not in inside]


def _is_loss(cls: type) -> bool:
    """Loss modules (``nn.MSELoss``, ``class DiceLoss(nn.Module)``) are not models to lint."""
    return issubclass(cls, nn.modules.loss._Loss) or cls.__name__.endswith("Loss")


def _is_stateless_layer(module: nn.Module) -> bool:
    """A lone torch layer without weights (``act = nn.ReLU()``): a helper, not a model."""
    return (
        type(module).__module__.startswith("torch.nn.")
        and not any(True for _ in module.children())
        and not any(True for _ in module.parameters())
    )


def _defines_forward(cls: type) -> bool:
    """A concrete forward: not nn.Module's, and not a stub (``raise NotImplementedError``)."""
    forward = getattr(cls, "forward", None)
    if forward is getattr(nn.Module, "forward", None):
        return False
    return not _is_stub(forward)


def _is_stub(fn: Any) -> bool:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    func = tree.body[0] if tree.body else None
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    # a docstring or ``...`` alone counts as no body
    body = [s for s in func.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not body:
        return True
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _required_params(fn: Callable[..., Any]) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _build(candidate: _Candidate, sites: ConstructionSites) -> tuple[nn.Module | None, str | None]:
    """The model object, built on the meta device when archlint builds it."""
    if candidate.kind == "instance":
        return candidate.obj, None
    try:
        with sites.recording(), torch.device("meta"):
            module = candidate.obj()
    except Exception:
        # Some constructors need real values (``.item()``, numpy); retry on CPU, and report the
        # CPU error if that fails too, since that is the one the user would see.
        try:
            with sites.recording():
                module = candidate.obj()
        except Exception as exc:
            return None, _build_error(candidate.name, exc, sites.files)
    if not isinstance(module, nn.Module):
        return None, (
            f"could not build {candidate.name}: {candidate.name}() returned "
            f"{type(module).__name__}, not an nn.Module"
        )
    return module, None


def _build_error(name: str, exc: BaseException, files: _FileNames) -> str:
    where = _user_frame_of(exc, files)
    at = f" (at {where})" if where else ""
    return f"could not build {name}: {type(exc).__name__}: {_one_line(exc)}{at}"


_Built = tuple[_Candidate, "nn.Module | None", "str | None"]


def _drop_nested_classes(built: list[_Built]) -> list[_Built]:
    """Drop classes that other discovered models use as parts: they are linted in place."""
    used: set[type] = set()
    for _, module, _ in built:
        if module is not None:
            used.update(type(m) for m in module.modules() if m is not module)
    kept = [b for b in built if b[0].obj not in used]
    return kept or built


# --------------------------------------------------------------------------------------------
# Example inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype | None = None  # None: decided by the first layer (float, long for Embedding)

    def meta_tensor(self, default_dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype or default_dtype, device="meta")


_NO_FILE_INPUT = object()


def _file_example_input(namespace: types.ModuleType) -> Any:
    return getattr(namespace, "example_input", _NO_FILE_INPUT)


def _chosen_inputs(
    options: Options, example_inputs: Any, file_input: Any
) -> list[InputSpec] | str | None:
    """The example input by precedence: ``--input-shape``, the API's ``example_inputs``, the
    file's ``example_input``, ``[tool.archlint]``; ``None`` means infer it from the first layer,
    and a string says why the given input is unusable."""
    config_shapes = _config_input_shapes(options)
    cli_shapes = options.input_shapes if options.input_shapes != config_shapes else None
    if cli_shapes:
        return [InputSpec(tuple(s)) for s in cli_shapes]
    if example_inputs is not None:
        return _specs_from_value(example_inputs, "example_inputs")
    if file_input is not _NO_FILE_INPUT and file_input is not None:
        return _specs_from_value(file_input, "example_input")
    if config_shapes:
        return [InputSpec(tuple(s)) for s in config_shapes]
    return None


def _config_input_shapes(options: Options) -> tuple[tuple[int, ...], ...] | None:
    """The input shapes ``[tool.archlint]`` gives, to rank them below ``example_input``."""
    if not options.config_file:
        return None
    try:
        return load_config(path=Path(options.config_file)).input_shapes
    except Exception:
        return None


def _specs_from_value(value: Any, what: str) -> list[InputSpec] | str:
    if isinstance(value, torch.Tensor):
        return [InputSpec(tuple(value.shape), value.dtype)]
    if _is_shape(value):
        return [InputSpec(tuple(int(d) for d in value))]
    if isinstance(value, (tuple, list)) and value:
        specs = []
        for item in value:
            if isinstance(item, torch.Tensor):
                specs.append(InputSpec(tuple(item.shape), item.dtype))
            elif _is_shape(item):
                specs.append(InputSpec(tuple(int(d) for d in item)))
            else:
                return _bad_input(what, item)
        return specs
    return _bad_input(what, value)


def _bad_input(what: str, value: Any) -> str:
    return (
        f"{what} must be a tensor, a tuple of tensors, or shape tuple(s); "
        f"got {type(value).__name__}"
    )


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) > 0
        and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    )


def _shape_hint(module: nn.Module) -> InputSpec | None:
    """A sensible example input for a model whose first layer is ``module``."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        channels = getattr(module, "in_channels", None) or getattr(module, "num_features")
        nd = _module_nd(module)
        spatial = {1: (1024,), 2: (224, 224), 3: (16, 112, 112)}.get(nd)
        if spatial is None:
            return None
        return InputSpec((1, channels, *spatial))
    if isinstance(module, nn.Linear):
        return InputSpec((1, module.in_features))
    if isinstance(module, nn.Embedding):
        return InputSpec((1, 128), torch.long)
    if isinstance(module, nn.modules.rnn.RNNBase):
        return InputSpec((1, 128, module.input_size) if module.batch_first
                         else (128, 1, module.input_size))
    if isinstance(module, nn.LayerNorm):
        return InputSpec((1, 128, *module.normalized_shape))
    return None


def _first_layer(gm: fx.GraphModule | None, root: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module the forward calls (fx order), else the first leaf registered."""
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module":
                return node.target, gm.get_submodule(node.target)
    for name, module in root.named_modules():
        if not list(module.children()):
            return name, module
    return None


def _module_nd(module: nn.Module) -> int | None:
    for cls in type(module).__mro__:
        m = re.search(r"([123])d$", cls.__name__)
        if m:
            return int(m.group(1))
    kernel = getattr(module, "kernel_size", None)
    if isinstance(kernel, tuple):
        return len(kernel)
    return None


# --------------------------------------------------------------------------------------------
# Capture of one model
# --------------------------------------------------------------------------------------------


class _ArchlintTracer(fx.Tracer):
    """fx's tracer, recording the innermost user frame of each node.

    fx's own ``record_stack_traces`` symbolizes through the profiler, which imports
    torch._dynamo (seconds); one frame walk per node is all a location needs.
    """

    def create_node(self, kind: str, target: Any, args: tuple, kwargs: dict,
                    name: str | None = None, type_expr: Any = None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        frame = _innermost_user_frame(sys._getframe(1))
        if frame is not None:
            node.meta["user_frame"] = frame
            node.stack_trace = f'File "{frame[0]}", line {frame[1]}'
        return node


def _capture(
    module: nn.Module,
    name: str,
    specs: list[InputSpec] | str | None,
    target: str | None,
    files: _FileNames,
    sites: ConstructionSites,
) -> Capture:
    if isinstance(specs, str):
        return Capture(name=name, graph=None, error=f"bad example input for {name}: {specs}")
    training = [(m, m.training) for m in module.modules()]
    module.eval()  # batch-1 inputs are legal in eval mode; BatchNorm refuses them in training
    try:
        return _capture_eval(module, name, specs, target, files, sites)
    except Exception as exc:  # never an unexplained crash
        where = _user_frame_of(exc, files)
        at = f" (at {where})" if where else ""
        return Capture(
            name=name,
            graph=None,
            error=f"could not trace {name}: {type(exc).__name__}: {_one_line(exc)}{at}",
        )
    finally:
        for m, flag in training:
            m.training = flag


def _capture_eval(
    module: nn.Module,
    name: str,
    specs: list[InputSpec] | None,
    target: str | None,
    files: _FileNames,
    sites: ConstructionSites,
) -> Capture:
    notes: list[str] = []
    gm, trace_error = _fx_trace(module, len(specs) if specs else 1, files)
    assumed = specs is None
    if specs is None:
        inferred = _inferred_input(gm, module)
        if inferred is None:
            return Capture(name=name, graph=None, error=(
                f"cannot infer an input shape for {name}: set --input-shape, a module-level "
                "example_input, or input-shape in [tool.archlint]"))
        specs = [inferred[0]]
        notes.append(inferred[1])
    missing = _missing_inputs(module, name, len(specs))
    if missing is not None:
        return Capture(name=name, graph=None, error=missing)
    default_dtype = _default_input_dtype(module, gm)
    inputs = [s.meta_tensor(default_dtype) for s in specs]
    g = new_graph(name, target, "torch")
    g.graph.update(
        input_shapes=[tuple(s.shape) for s in specs],
        input_dtypes=[str(t.dtype).replace("torch.", "") for t in inputs],
        input_assumed=assumed,
        fx_names={},
        traced_module=module,  # the object traced: meta-built unless the user gave it
        graph_module=gm,  # the fx graph (on the traced module), None after an eager capture
    )
    builder = _GraphBuilder(g, module, files, sites)
    if gm is not None:
        builder.from_fx(gm, inputs)
    else:
        notes.append(f"torch.fx could not trace {name} ({trace_error}); captured by running "
                     "forward on meta tensors instead")
        builder.from_eager(inputs)
    if g.graph["capture_note"]:
        notes.append(g.graph["capture_note"])
    return Capture(name=name, graph=g, notes=notes)


def _inferred_input(gm: fx.GraphModule | None, module: nn.Module) -> tuple[InputSpec, str] | None:
    """An input shape guessed from the first layer, and the note that says so."""
    first = _first_layer(gm, module)
    hint = _shape_hint(first[1]) if first else None
    if hint is None:
        return None
    note = (
        f"input shape {_fmt_shape(hint.shape)} assumed from the first layer {first[0]} "
        f"({_module_origin(first[1])}); set it with --input-shape, a module-level "
        "example_input, or input-shape in [tool.archlint]"
    )
    return hint, note


def _missing_inputs(module: nn.Module, name: str, given: int) -> str | None:
    required = [p.name for p in _forward_params(module) if p.default is inspect.Parameter.empty]
    if given >= len(required):
        return None
    return (
        f"{name}.forward takes {len(required)} inputs ({', '.join(required)}) but {given} "
        "example input(s) were given: set example_input = (t1, t2, ...) or pass --input-shape "
        "once per input"
    )


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def _forward_params(module: nn.Module) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    return [
        p for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def trace(module: nn.Module, n_inputs: int = 1) -> fx.GraphModule:
    """fx-trace ``module`` exactly as capture does, so its node names are the keys of
    ``g.graph["fx_names"]`` (for running the same graph on a real device). Raises on failure;
    parameters of ``forward`` past the first ``n_inputs`` keep their defaults."""
    concrete = {
        p.name: p.default
        for p in _forward_params(module)[n_inputs:]
        if p.default is not inspect.Parameter.empty
    }
    graph = _ArchlintTracer().trace(module, concrete_args=concrete or None)
    return fx.GraphModule(module, graph, class_name=type(module).__name__)


def _fx_trace(
    module: nn.Module, n_inputs: int, files: _FileNames
) -> tuple[fx.GraphModule | None, str | None]:
    """:func:`trace`, or ``(None, one-line reason)`` when fx cannot trace it."""
    try:
        return trace(module, n_inputs), None
    except Exception as exc:
        where = _user_frame_of(exc, files)
        at = f" at {where}" if where else ""
        return None, f"{type(exc).__name__}: {_one_line(exc)}{at}"


def _default_input_dtype(module: nn.Module, gm: fx.GraphModule | None) -> torch.dtype:
    first = _first_layer(gm, module)
    if first is not None and isinstance(first[1], (nn.Embedding, nn.EmbeddingBag)):
        return torch.long
    return torch.float32


# --------------------------------------------------------------------------------------------
# Shape propagation on meta tensors
# --------------------------------------------------------------------------------------------


class _Failed:
    """The value of a node whose shape propagation failed (here or upstream)."""

    def __repr__(self) -> str:
        return "<failed>"


FAILED = _Failed()


def _is_unsupported(exc: BaseException) -> bool:
    """An archlint limitation (no meta kernel, data-dependent op), not a bug in the model."""
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "data-dependent" in text


class _MetaState:
    """Meta stand-ins for a real-weight model's parameters and buffers (no data copied)."""

    def __init__(self, root: nn.Module):
        self.needed = any(
            t.device.type != "meta" for t in itertools.chain(root.parameters(), root.buffers())
        )
        self._cache: dict[int, torch.Tensor] = {}

    def tensor(self, value: Any) -> Any:
        if not self.needed or not isinstance(value, torch.Tensor) or value.device.type == "meta":
            return value
        key = id(value)
        if key not in self._cache:
            self._cache[key] = torch.empty_like(value, device="meta")
        return self._cache[key]

    def call(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not self.needed:
            return module(*args, **kwargs)
        state = {
            k: self.tensor(v)
            for k, v in itertools.chain(module.named_parameters(), module.named_buffers())
        }
        return torch.func.functional_call(module, state, args, kwargs)


class _ShapeInterpreter(fx.Interpreter):
    """Runs an fx graph on meta tensors, recording per-node failures instead of stopping."""

    def __init__(self, gm: fx.GraphModule, meta: _MetaState):
        super().__init__(gm, garbage_collect_values=False)
        self.meta = meta
        self.errors: dict[str, str] = {}  # node -> reason (a real shape error)
        self.unsupported: dict[str, str] = {}  # node -> reason (archlint cannot model it)

    def run_node(self, n: fx.Node) -> Any:
        if any(self.env.get(a) is FAILED for a in n.all_input_nodes):
            return FAILED
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        kind, target = _fx_kind_target(self.module, n)
        try:
            value = super().run_node(n)
            check_cpu_only_rules(kind, target, args, kwargs)
            return value
        except Exception as exc:
            if _is_unsupported(exc):
                self.unsupported[n.name] = _one_line(exc)
            else:
                self.errors[n.name] = pytorch_message(kind, target, args, kwargs, exc)
            return FAILED

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        return self.meta.tensor(super().get_attr(target, args, kwargs))

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        return self.meta.call(self.fetch_attr(target), args, kwargs)


def _fx_kind_target(gm: fx.GraphModule, n: fx.Node) -> tuple[str, Any]:
    if n.op == "call_module":
        return "module", gm.get_submodule(n.target)
    return ("method" if n.op == "call_method" else "function"), n.target


# --------------------------------------------------------------------------------------------
# Building the IR
# --------------------------------------------------------------------------------------------


class _GraphBuilder:
    def __init__(self, g: Any, root: nn.Module, files: _FileNames, sites: ConstructionSites):
        self.g = g
        self.root = root
        self.files = files
        self.sites = sites
        self._forward_loc = _forward_location(root, files)

    # ---- fx path ---------------------------------------------------------------------------

    def from_fx(self, gm: fx.GraphModule, inputs: list[torch.Tensor]) -> None:
        interp = _ShapeInterpreter(gm, _MetaState(self.root))
        with torch.no_grad(), torch.device("meta"):
            interp.run(*inputs)
        env = interp.env
        ir_of: dict[fx.Node, str] = {}
        fx_names: dict[str, str] = self.g.graph["fx_names"]
        sources: dict[fx.Node, set[str]] = {}  # non-tensor values: the IR tensors they came from
        first_unsupported: str | None = None
        for n in gm.graph.nodes:
            value = env.get(n, FAILED)
            if n.op == "placeholder":
                if _has_tensor(value):  # a tensor, or the tensors of ``*inputs``
                    loc = Location(self._forward_loc[0], self._forward_loc[1], n.name)
                    add_op(self.g, n.name, "input", shapes=_shapes_of(value), location=loc,
                           origin="input")
                    ir_of[n] = n.name
                    fx_names[n.name] = n.name
                continue
            if n.op == "get_attr":
                continue
            if n.op == "output":
                fx_names[n.name] = self._add_output_names(
                    [ir_of[a] for a in _fx_tensor_inputs(n, ir_of)])
                continue
            tensor_inputs = _fx_tensor_inputs(n, ir_of)
            failed = value is FAILED
            if not tensor_inputs:
                sources[n] = set().union(*(sources.get(a, set()) for a in n.all_input_nodes))
                continue  # constants, parameters and factory tensors are not activations
            if (failed and not _returns_tensor(n)) or (not failed and not _has_tensor(value)):
                # shape arithmetic (x.size(2), skip.shape[2:]): resolves attrs, not an op
                sources[n] = {ir_of[a] for a in tensor_inputs} | set().union(
                    *(sources.get(a, set()) for a in n.all_input_nodes)
                )
                continue
            alias = self._alias(n, value, ir_of)
            if alias is not None:
                ir_of[n] = alias
                fx_names[n.name] = alias
                continue
            call = _fx_call(n, gm, env, ir_of, sources, self.g)
            op, attrs, origin = describe(call)
            error = interp.errors.get(n.name)
            if n.name in interp.unsupported and first_unsupported is None:
                first_unsupported = n.name
            shapes = None if failed else _shapes_of(value)
            add_op(
                self.g,
                n.name,
                op,
                inputs=[ir_of[a] for a in tensor_inputs],
                attrs=attrs,
                shapes=shapes,
                location=self._fx_location(n, gm),
                origin=origin,
                error=error,
            )
            ir_of[n] = n.name
            fx_names[n.name] = n.name
        if first_unsupported is not None:
            loc = self.g.nodes[first_unsupported]["location"]
            reason = interp.unsupported[first_unsupported]
            self.g.graph["capture_note"] = (
                f"shapes unknown from {first_unsupported} ({loc}) on: archlint cannot run "
                f"{self.g.nodes[first_unsupported]['origin']} on meta tensors ({reason})"
            )

    def _alias(self, n: fx.Node, value: Any, ir_of: dict[fx.Node, str]) -> str | None:
        """``out, state = self.lstm(x)``: element 0 of a module's tuple output is that module."""
        if n.op != "call_function" or n.target is not operator.getitem:
            return None
        src = n.args[0]
        if not isinstance(src, fx.Node) or src not in ir_of or n.args[1] != 0:
            return None
        shapes = self.g.nodes[ir_of[src]]["shapes"]
        if not isinstance(value, torch.Tensor) or shapes is None or len(shapes) < 2:
            return None
        return ir_of[src] if shapes[0] == tuple(value.shape) else None

    def _fx_location(self, n: fx.Node, gm: fx.GraphModule) -> Location:
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            site = self.sites.get(module) or _assignment_site(self.root, n.target, self.files)
            if site is not None:
                return Location(site[0], site[1], n.target)
            file, line = self._call_location(n)
            return Location(file, line, n.target)
        file, line = self._call_location(n)
        return Location(file, line, n.name)

    def _call_location(self, n: fx.Node) -> tuple[str | None, int | None]:
        """The line in forward that made the call: the innermost user frame."""
        frame = n.meta.get("user_frame")
        if frame is None:
            return self._forward_loc
        return self.files.display(frame[0]), frame[1]

    def _add_output_names(self, names: list[str]) -> str:
        shapes: list[tuple[int, ...]] | None = []
        for name in names:
            s = self.g.nodes[name]["shapes"]
            if s is None:
                shapes = None
                break
            shapes.append(s[0])
        loc = Location(self._forward_loc[0], self._forward_loc[1], "output")
        candidates = itertools.chain(["output"], (f"output_{i}" for i in itertools.count(1)))
        out = next(n for n in candidates if n not in self.g)
        return add_op(self.g, out, "output", inputs=names,
                      shapes=None if shapes is None else tuple(shapes), location=loc,
                      origin="output")

    # ---- eager path (fx could not trace) ----------------------------------------------------

    def from_eager(self, inputs: list[torch.Tensor]) -> None:
        recorder = _EagerRecorder(self, inputs)
        recorder.run()


def _fx_tensor_inputs(n: fx.Node, ir_of: dict[fx.Node, str]) -> list[fx.Node]:
    """Argument nodes that carry activations, in argument order (repeats kept: ``x + x``)."""
    found: list[fx.Node] = []

    def visit(a: fx.Node) -> fx.Node:
        if a in ir_of:
            found.append(a)
        return a

    fx.node.map_arg((n.args, n.kwargs), visit)
    return found


_NON_TENSOR_METHODS = frozenset(
    {"size", "dim", "numel", "nelement", "ndimension", "item", "tolist", "get_device",
     "element_size", "is_contiguous", "stride", "data_ptr", "storage_offset"}
)


def _returns_tensor(n: fx.Node) -> bool:
    """For a failed node, whose value is unknown: does it produce a tensor?"""
    if n.op == "call_method":
        return n.target not in _NON_TENSOR_METHODS
    if n.op == "call_function":
        if n.target is getattr:
            return False
        if n.target is operator.getitem:
            src = n.args[0]
            return isinstance(src, fx.Node) and _returns_tensor(src)
    return True


def _has_tensor(value: Any) -> bool:
    return any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(value))


def _shapes_of(value: Any) -> tuple[tuple[int, ...], ...] | None:
    shapes = tuple(tuple(v.shape) for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor))
    return shapes or None


def _forward_location(root: nn.Module, files: _FileNames) -> tuple[str | None, int | None]:
    forward = getattr(type(root), "forward", None)
    code = getattr(forward, "__code__", None)
    if code is None or not _is_user_file(code.co_filename):
        return None, None
    return files.display(code.co_filename), code.co_firstlineno


def _assignment_site(root: nn.Module, qualname: str, files: _FileNames) -> tuple[str, int] | None:
    """For a module built before archlint was watching: the ``self.<attr> = ...`` line in its
    parent's class, or, for ``<attr>.<i>``, the i-th argument of
    ``self.<attr> = nn.Sequential(...)``.
    """
    parts = qualname.split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        owner, attr, index = parts[:-2], parts[-2], int(parts[-1])
    else:
        owner, attr, index = parts[:-1], parts[-1], None
    try:
        parent = root.get_submodule(".".join(owner))
    except AttributeError:
        return None
    for cls in type(parent).__mro__:
        if cls.__module__.startswith("torch."):
            break
        site = _find_assignment(cls, attr, index)
        if site is not None:
            return files.display(site[0]), site[1]
    return None


def _find_assignment(cls: type, attr: str, index: int | None) -> tuple[str, int] | None:
    try:
        filename = inspect.getsourcefile(cls)
        lines, start = inspect.getsourcelines(cls)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return None
    if filename is None or not _is_user_file(filename):
        return None
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if not any(_is_self_attr(t, attr) for t in targets):
            continue
        value = node.value
        if index is not None and isinstance(value, ast.Call) and index < len(value.args) \
                and not any(isinstance(a, ast.Starred) for a in value.args[: index + 1]):
            return filename, start + value.args[index].lineno - 1
        return filename, start + node.lineno - 1
    return None


def _is_self_attr(target: ast.expr, attr: str) -> bool:
    return (isinstance(target, ast.Attribute) and target.attr == attr
            and isinstance(target.value, ast.Name) and target.value.id == "self")


# --------------------------------------------------------------------------------------------
# Op description: one call (module, function or method) -> (op kind, Attrs, origin)
# --------------------------------------------------------------------------------------------


@dataclass
class OpCall:
    """One call as both tracers see it.

    ``values`` are the concrete argument values bound to parameter names (meta tensors, ints);
    ``raw`` are the same arguments as the tracer wrote them (fx Nodes where a value was
    computed at run time), or ``values`` again for the eager path.
    """

    kind: str  # "module" | "function" | "method"
    target: Any
    args: tuple
    kwargs: dict
    raw_args: tuple
    raw_kwargs: dict
    #: IR node that produced a raw argument, for activations.
    producer: Callable[[Any], str | None] = lambda raw: None
    #: the single IR tensor a raw non-tensor value (a size) was computed from, else None.
    size_source: Callable[[Any], str | None] = lambda raw: None
    #: whether a raw value was computed at run time (from a tensor's size).
    is_runtime: Callable[[Any], bool] = lambda raw: False
    #: spatial sizes of an IR node's main output, when known.
    spatial_of: Callable[[str], tuple[int, ...] | None] = lambda name: None
    module: nn.Module | None = None
    bound: dict[str, Any] = field(default_factory=dict)
    bound_raw: dict[str, Any] = field(default_factory=dict)

    def bind(self, params: tuple[str, ...], defaults: dict[str, Any] | None = None) -> None:
        self.bound = _bind(params, self.args, self.kwargs, defaults or {})
        self.bound_raw = _bind(params, self.raw_args, self.raw_kwargs, defaults or {})

    def get(self, name: str, default: Any = None) -> Any:
        return self.bound.get(name, default)

    def input_rank(self) -> int | None:
        x = self.args[0] if self.args else None
        return x.dim() if isinstance(x, torch.Tensor) else None


def _bind(params: tuple[str, ...], args: tuple, kwargs: dict, defaults: dict[str, Any]) -> dict:
    """Arguments by parameter name; a ``*name`` parameter collects the rest as a tuple."""
    out = dict(defaults)
    for i, name in enumerate(params):
        if name.startswith("*"):
            out[name[1:]] = tuple(args[i:])
            break
        if i < len(args):
            out[name] = args[i]
    out.update(kwargs)
    return out


def _fx_call(
    n: fx.Node, gm: fx.GraphModule, env: dict, ir_of: dict[fx.Node, str],
    sources: dict[fx.Node, set[str]], g: Any,
) -> OpCall:
    def concrete(a: Any) -> Any:
        return fx.node.map_arg(a, lambda x: env.get(x, FAILED))

    def producer(raw: Any) -> str | None:
        return ir_of.get(raw) if isinstance(raw, fx.Node) else None

    def size_source(raw: Any) -> str | None:
        found: set[str] = set()
        fx.node.map_arg(raw, lambda x: found.update(sources.get(x, set())) or x)
        return next(iter(found)) if len(found) == 1 else None

    def is_runtime(raw: Any) -> bool:
        return isinstance(raw, fx.Node)

    def spatial_of(name: str) -> tuple[int, ...] | None:
        shapes = g.nodes[name]["shapes"] if name in g else None
        return tuple(shapes[0][2:]) if shapes else None

    kind = {"call_module": "module", "call_function": "function", "call_method": "method"}[n.op]
    target = gm.get_submodule(n.target) if n.op == "call_module" else n.target
    return OpCall(
        kind=kind,
        target=target,
        args=concrete(n.args),
        kwargs=concrete(n.kwargs),
        raw_args=n.args,
        raw_kwargs=dict(n.kwargs),
        producer=producer,
        size_source=size_source,
        is_runtime=is_runtime,
        spatial_of=spatial_of,
        module=target if kind == "module" else None,
    )


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


def _module_origin(module: nn.Module) -> str:
    cls = type(module)
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


_ORIGIN_NAMES: dict[int, str] = {}


def _function_origin(fn: Any) -> str:
    if not _ORIGIN_NAMES:
        for prefix, namespace in (("operator", operator), ("torch", torch), ("F", F)):
            for name, obj in vars(namespace).items():
                if callable(obj) and not name.startswith("_"):
                    _ORIGIN_NAMES[id(obj)] = f"{prefix}.{name}"
    name = _ORIGIN_NAMES.get(id(fn))
    if name is not None:
        return name
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname


# ---- per-axis helpers ------------------------------------------------------------------------


def _per_axis(value: Any, nd: int) -> tuple:
    if isinstance(value, (list, tuple, torch.Size)):
        items = tuple(value)
        return items * nd if len(items) == 1 and nd > 1 else items
    return (value,) * nd


def _ints(value: Any, nd: int) -> tuple[int, ...]:
    return tuple(int(v) for v in _per_axis(value, nd))


def _pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(p), int(p)) for p in _per_axis(value, nd))


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``padding='same'`` as PyTorch applies it: total ``d*(k-1)``, the odd pixel at the end."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def _conv_padding(padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]
                  ) -> tuple[tuple[tuple[int, int], ...], str]:
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "same":
            return same_padding(kernel, dilation), "same"
        return ((0, 0),) * nd, padding
    return _pairs(padding, nd), ""


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
    ((nn.MultiheadAttention, nn.GLU), ("unknown", None, _no_attrs)),  # not shape-preserving
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
    return Attrs(axis=int(call.get("dim", 0)))


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
        return (kind if both else "pointwise"), Attrs()
    return attrs


def _reduce_fn(kind: str) -> Callable[[OpCall], tuple[str, Attrs]]:
    """``x.mean((2, 3))`` / ``amax`` over every spatial axis is a global pool."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        rank = call.input_rank()
        dims = call.get("dim")
        if rank is None or rank < 3 or dims is None:
            return "unknown", Attrs()
        dims = {int(d) % rank for d in _per_axis(dims, 1)}
        if dims != set(range(2, rank)):
            return "unknown", Attrs()
        keepdim = bool(call.get("keepdim", False))
        return "global_pool", Attrs(extra={"kind": kind, "keepdim": keepdim})
    return attrs


def _split_fn(call: OpCall) -> tuple[str, Attrs]:
    """A split along batch or channels leaves the spatial axes alone."""
    rank = call.input_rank()
    dim = int(call.get("dim", 0))
    if rank is None or dim % rank >= 2:
        return "unknown", Attrs()
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
        return "unknown", Attrs()
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
    "hardswish hardsigmoid sigmoid tanh softmax log_softmax softmin softplus softsign threshold "
    "prelu rrelu logsigmoid tanhshrink hardshrink softshrink dropout dropout1d dropout2d "
    "dropout3d alpha_dropout feature_alpha_dropout normalize"
).split()
_POINTWISE_TORCH_NAMES = (
    "relu relu_ sigmoid sigmoid_ tanh tanh_ exp log log1p abs sqrt rsqrt neg clamp clip pow sin "
    "cos erf softmax log_softmax zeros_like ones_like full_like rand_like randn_like empty_like "
    "square reciprocal sign floor ceil round nan_to_num dropout detach clone selu celu "
    "hardtanh threshold"
).split()
_POINTWISE_METHODS = (
    "contiguous clone detach float double half bfloat16 to type type_as cpu cuda relu relu_ "
    "sigmoid sigmoid_ tanh tanh_ exp exp_ log abs sqrt sqrt_ neg clamp clamp_ clip pow pow_ "
    "softmax log_softmax requires_grad_ sin cos square reciprocal long int bool masked_fill "
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
    add([operator.getitem], ("?", None, _getitem_fn))
    _METHODS["__getitem__"] = ("?", None, _getitem_fn)


_register_functions()


# --------------------------------------------------------------------------------------------
# Parity with a real CPU run: checks meta kernels skip, and PyTorch's own error messages
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Eager capture (fx could not trace): run forward on meta tensors and record each op
# --------------------------------------------------------------------------------------------


class _StopCapture(BaseException):
    """Raised through the user's forward once an op failed; the note says where.

    A BaseException, so that a user's ``except Exception`` does not swallow it."""


class _EagerRecorder(TorchFunctionMode):
    """Records each torch call made by forward (outside leaf modules) and each leaf module call,
    connecting them by tensor identity."""

    def __init__(self, builder: _GraphBuilder, inputs: list[torch.Tensor]):
        super().__init__()
        self.builder = builder
        self.g = builder.g
        self.inputs = inputs
        self.producer: dict[int, str] = {}
        self.keep: list[Any] = []  # keeps recorded tensors alive so their ids stay unique
        self.leaf_depth = 0
        self.names: dict[str, int] = {}
        self.qualnames = {m: name for name, m in builder.root.named_modules()}

    def run(self) -> None:
        root = self.builder.root
        tracer = fx.Tracer()
        leaves = [m for name, m in root.named_modules()
                  if m is not root and tracer.is_leaf_module(m, name)]
        wrapped = [(m, self._wrap_leaf(m)) for m in leaves]
        for i, t in enumerate(self.inputs):
            name = self._unique(f"x{i}" if len(self.inputs) > 1 else "x")
            loc = Location(self.builder._forward_loc[0], self.builder._forward_loc[1], name)
            add_op(self.g, name, "input", shapes=(tuple(t.shape),), location=loc, origin="input")
            self._remember(t, name)
        meta = _MetaState(root)
        out: Any = None
        try:
            with torch.no_grad(), torch.device("meta"), self:
                out = meta.call(root, tuple(self.inputs), {})
        except _StopCapture:
            out = None
        except Exception as exc:
            where = _user_frame_of(exc, self.builder.files)
            self.g.graph["capture_note"] = (
                f"capture stopped at {where or 'forward'}: {type(exc).__name__}: {_one_line(exc)}"
            )
            out = None
        finally:
            for m, original in wrapped:
                if original is None:
                    del m.forward
                else:
                    m.forward = original
        names = [self.producer[id(v)] for v in pytree.tree_leaves(out)
                 if isinstance(v, torch.Tensor) and id(v) in self.producer]
        self.builder._add_output_names(names)

    def _wrap_leaf(self, module: nn.Module) -> Any:
        own = module.__dict__.get("forward")
        original_forward = module.forward
        recorder = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            if recorder.leaf_depth:
                return original_forward(*args, **kwargs)
            recorder.leaf_depth += 1
            try:
                out = original_forward(*args, **kwargs)
                check_cpu_only_rules("module", module, args, kwargs)
            except Exception as exc:
                recorder._record("module", module, args, kwargs, None, exc)
                raise _StopCapture() from exc
            finally:
                recorder.leaf_depth -= 1
            recorder._record("module", module, args, kwargs, out, None)
            return out

        module.forward = forward
        return own

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.leaf_depth:
            return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
            if self._activation_args(args, kwargs):
                check_cpu_only_rules(*_eager_target(func), args, kwargs)
        except Exception as exc:
            if not self._activation_args(args, kwargs):
                raise
            if _is_unsupported(exc):  # e.g. ``if x.sum() > 0``: a branch on tensor values
                where = _innermost_user_frame(sys._getframe(1))
                at = f"{self.builder.files.display(where[0])}:{where[1]}" if where else "forward"
                kind, target = _eager_target(func)
                what = f"Tensor.{target}" if kind == "method" else _function_origin(target)
                self.g.graph["capture_note"] = (
                    f"capture stopped at {at}: forward needs tensor values there ({what}: "
                    f"{_one_line(exc)}); the ops before it were captured"
                )
            else:
                self._record(*_eager_target(func), args, kwargs, None, exc)
            raise _StopCapture() from exc
        if self._activation_args(args, kwargs) and _has_tensor(out):
            self._record(*_eager_target(func), args, kwargs, out, None)
        return out

    def _activation_args(self, args: tuple, kwargs: dict) -> list[str]:
        return [self.producer[id(v)] for v in pytree.tree_leaves((args, kwargs))
                if isinstance(v, torch.Tensor) and id(v) in self.producer]

    def _record(self, kind: str, target: Any, args: tuple, kwargs: dict, out: Any,
                exc: BaseException | None) -> None:
        inputs = self._activation_args(args, kwargs)
        call = OpCall(kind=kind, target=target, args=args, kwargs=kwargs, raw_args=args,
                      raw_kwargs=kwargs, producer=self._producer_of,
                      module=target if kind == "module" else None)
        op, attrs, origin = describe(call)
        base = self.qualnames.get(target, "module") if kind == "module" else \
            re.sub(r"\W", "_", origin.rsplit(".", 1)[-1]).strip("_") or "op"
        name = self._unique(base.replace(".", "_"))
        location = self._location(kind, target, name)
        error = None
        if exc is not None:
            error = None if _is_unsupported(exc) else pytorch_message(
                kind, target, args, kwargs, exc)
            self.g.graph["capture_note"] = (
                f"capture stopped at {location}: {origin}: {error or _one_line(exc)}"
            )
        add_op(self.g, name, op, inputs=inputs, attrs=attrs,
               shapes=None if out is None else _shapes_of(out), location=location,
               origin=origin, error=error)
        for v in pytree.tree_leaves(out):
            if isinstance(v, torch.Tensor):
                self._remember(v, name)

    def _producer_of(self, value: Any) -> str | None:
        return self.producer.get(id(value)) if isinstance(value, torch.Tensor) else None

    def _remember(self, tensor: torch.Tensor, name: str) -> None:
        self.producer[id(tensor)] = name
        self.keep.append(tensor)

    def _unique(self, base: str) -> str:
        count = self.names.get(base, 0)
        self.names[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        while name in self.g:
            count += 1
            name = f"{base}_{count}"
        return name

    def _location(self, kind: str, target: Any, name: str) -> Location:
        """A layer's construction line, else the forward line that made the call."""
        node = self.qualnames.get(target, name) if kind == "module" else name
        if kind == "module":
            site = self.builder.sites.get(target) or _assignment_site(
                self.builder.root, node, self.builder.files)
            if site is not None:
                return Location(site[0], site[1], node)
        frame = _innermost_user_frame(sys._getframe(1))
        if frame is None:
            return Location(None, None, node)
        return Location(self.builder.files.display(frame[0]), frame[1], node)


def _innermost_user_frame(frame: types.FrameType | None) -> tuple[str, int] | None:
    while frame is not None:
        if _is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


def _eager_target(func: Any) -> tuple[str, Any]:
    """A torch-function callable as fx would name it: a method name or a function."""
    qualname = getattr(func, "__qualname__", "") or ""
    name = getattr(func, "__name__", "")
    if qualname.startswith(("TensorBase.", "Tensor.")) and name:
        return "method", name
    return "function", func
