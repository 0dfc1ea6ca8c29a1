"""Find and import models: import a ``.py`` file as a fresh module (under its dotted name inside
its package, with the project's import roots on ``sys.path``: see :mod:`archlint.project`),
discover its models (``--model`` or ``[tool.archlint] models`` with their constructor arguments,
module-level instances, zero-argument classes) and build them on the meta device."""


from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import textwrap
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from archlint.config import ModelSpec
from archlint.frontends import TargetError
from archlint.frontends.torch.locate import (
    ConstructionSites,
    _FileNames,
    _one_line,
    _user_frame_of,
)
from archlint.project import ImportPlan
from archlint.suggest import did_you_mean

_module_ids = itertools.count()


@contextlib.contextmanager
def _importing_from(plan: ImportPlan) -> Iterator[None]:
    """The plan's import roots first on sys.path; afterwards, sys.path and sys.modules as they
    were: the project's modules imported meanwhile are forgotten and any they replaced come back,
    so that another project's ``models`` package or ``layers.py`` is not mistaken for this one's."""
    saved_path = list(sys.path)
    saved_modules = dict(sys.modules)
    roots = [str(r) for r in plan.import_roots]
    shadowed = _shadowing_modules(plan)
    for name in shadowed:
        del sys.modules[name]
    sys.path[:0] = roots
    try:
        yield
    finally:
        sys.path[:] = saved_path
        prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
        for name, module in list(sys.modules.items()):
            if saved_modules.get(name) is module or name.startswith("_archlint_model_"):
                continue
            if _is_project_module(module, prefixes):
                if name in saved_modules:
                    sys.modules[name] = saved_modules[name]
                else:
                    del sys.modules[name]
        for name, module in shadowed.items():
            sys.modules[name] = module


def _shadowing_modules(plan: ImportPlan) -> dict[str, types.ModuleType]:
    """Modules already imported under the name of this file's top package but from elsewhere
    (another project's ``models``): set aside while this file is imported."""
    if plan.module_name is None:
        return {}
    top = plan.module_name.split(".")[0]
    base = str(plan.import_roots[0]) + os.sep
    out = {}
    for name, module in list(sys.modules.items()):
        if (name == top or name.startswith(top + ".")) and module is not None \
                and not any(p.startswith(base) for p in _module_files(module)):
            out[name] = module
    return out


def _module_files(module: types.ModuleType) -> list[str]:
    files = [getattr(module, "__file__", None) or ""]
    files += list(getattr(module, "__path__", None) or [])  # namespace packages have no file
    return [os.path.abspath(f) for f in files if isinstance(f, str) and f]


def _is_project_module(module: types.ModuleType | None, prefixes: tuple[str, ...]) -> bool:
    """A module loaded from the project's own folders (not from a virtualenv inside them)."""
    if module is None:
        return False
    return any(
        f.startswith(prefixes) and "site-packages" not in f and "dist-packages" not in f
        for f in _module_files(module)
    )


@contextlib.contextmanager
def _quiet_user_code() -> Iterator[None]:
    """User prints go to stderr (stdout may carry JSON); warnings from tracing are muted."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_file(path: Path, sites: ConstructionSites, plan: ImportPlan) -> types.ModuleType:
    """Import ``path`` fresh: under its dotted name inside its package (its parent packages
    imported first, so relative imports work), else under a private name."""
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
    try:
        with sites.recording():
            module, executed = _new_module(path, plan)
            if not executed:  # else its package's __init__ imported it, with sites recorded
                exec(code, module.__dict__)
    except SystemExit as exc:
        raise TargetError(f"{path} called sys.exit({exc.code!r}) at import") from None
    except Exception as exc:
        where = _user_frame_of(exc, files)
        at = f" at {where}" if where else ""
        raise TargetError(
            f"importing {path} raised {type(exc).__name__}: {_one_line(exc)}{at}"
            + _import_hint(exc, path, plan)
        ) from None
    return module


def _new_module(path: Path, plan: ImportPlan) -> tuple[types.ModuleType, bool]:
    """The module object to run the file in, and whether it ran already."""
    name = plan.module_name
    if name is None:
        stem = re.sub(r"\W", "_", path.stem)
        module = types.ModuleType(f"_archlint_model_{next(_module_ids)}_{stem}")
        module.__file__ = str(path.resolve())
        sys.modules[module.__name__] = module  # dataclasses and pickling look the module up
        return module, False
    parent = name.rpartition(".")[0]
    before = sys.modules.get(name)
    if parent:
        importlib.import_module(parent)
    imported = sys.modules.get(name)
    if imported is not None and imported is not before and _same_file(imported, path):
        return imported, True
    is_package = path.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, path.resolve(),
        submodule_search_locations=[str(path.resolve().parent)] if is_package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # restored by _importing_from afterwards
    return module, False


def _same_file(module: types.ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and os.path.realpath(file) == os.path.realpath(path)


def _import_hint(exc: BaseException, path: Path, plan: ImportPlan) -> str:
    """Why an import of the user's own code failed, when archlint can tell."""
    if not isinstance(exc, ImportError):
        return ""
    if "no known parent package" in str(exc):
        return (f" ({path.resolve().parent} has no __init__.py, so {path.name} is not part of a "
                "package; add one to import it with relative imports)")
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] not in (
            "torch", "numpy"):
        where = ", ".join(str(r) for r in plan.import_roots)
        return (f" (not installed, and not under the import roots {where}; if it is part of "
                "the project, add the folder that holds it to pythonpath in [tool.archlint])")
    return ""


@dataclass
class _Candidate:
    name: str  # as reports show it: ``Net``, or ``Net(width=64)`` when built with arguments
    kind: str  # "instance" | "class" | "factory"
    obj: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def factory(self) -> Callable[[], Any]:
        """A zero-argument callable that builds this model (for --confirm's real weights)."""
        if not self.args and not self.kwargs:
            return self.obj
        return functools.partial(self.obj, *self.args, **self.kwargs)


def _discover(namespace: types.ModuleType, path: Path, specs: list[tuple[ModelSpec, str]]
              ) -> list[_Candidate]:
    """The models to lint: each named one (``specs``: the spec and where it came from, --model or
    the config), else the module-level instances, else the zero-argument classes that are not
    building blocks of another class in the file."""
    if specs:
        return [_named_candidate(namespace, path, spec, origin) for spec, origin in specs]
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
    blocks = _building_blocks(path, {n for n, _ in classes})
    models = [(n, c) for n, c in classes if n not in blocks] or classes
    buildable = [_Candidate(n, "class", c) for n, c in models if not _required_params(c)]
    if not buildable:
        needs = "; ".join(f"{n} needs {', '.join(_required_params(c))}" for n, c in models)
        example = f'{models[0][0]}({", ".join(f"{p}=..." for p in _required_params(models[0][1]))})'
        raise TargetError(
            f"no model found in {path}: every nn.Module class needs constructor arguments "
            f"({needs}); give them as --model \"{example}\" or in [tool.archlint] models, name "
            "a zero-argument factory, or set a module-level instance"
        )
    return buildable


def _building_blocks(path: Path, class_names: set[str]) -> set[str]:
    """Classes of this file that another model class of this file uses (``self.b = Block(64)``,
    ``block=BasicBlock``): parts linted in place, not models of their own."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in class_names:
            for stmt in node.body:  # the body, not the bases: a subclass is not a user
                used.update(n.id for n in ast.walk(stmt)
                            if isinstance(n, ast.Name) and n.id in class_names and n.id != node.name)
    return used


def _named_candidate(namespace: types.ModuleType, path: Path, spec: ModelSpec, origin: str
                     ) -> _Candidate:
    name = spec.name
    obj = _lookup(namespace, name)
    if obj is _MISSING:
        raise TargetError(f"{origin} {spec.text}: {path} has no attribute {name!r}"
                          + did_you_mean(name, _model_names(namespace), what="models in this file"))
    args, kwargs = spec.args, dict(spec.kwargs)
    if isinstance(obj, nn.Module):
        if spec.called:
            raise TargetError(f"{origin} {spec.text}: {name} is an nn.Module instance, already "
                              f"built; name it without arguments (--model {name})")
        return _Candidate(name, "instance", obj)
    is_class = isinstance(obj, type) and issubclass(obj, nn.Module)
    if is_class or (callable(obj) and not isinstance(obj, type)):
        missing = _unbound_params(obj, args, kwargs)
        if missing is None:
            raise TargetError(f"{origin} {spec.text}: {_signature_error(obj, args, kwargs)}")
        if missing:
            what = f"class {name} needs constructor arguments" if is_class \
                else f"{name}() needs arguments"
            raise TargetError(
                f"{origin} {spec.text}: {what} ({', '.join(missing)}); "
                f"give them as --model \"{name}({', '.join(f'{m}=...' for m in missing)})\" "
                "(literals only) or in [tool.archlint] models"
            )
        return _Candidate(spec.text if spec.called else name,
                          "class" if is_class else "factory", obj, args, kwargs)
    raise TargetError(
        f"{origin} {spec.text}: {name} is a {type(obj).__name__}, not an nn.Module instance, "
        "an nn.Module class or a factory function"
    )


_MISSING = object()


def _lookup(namespace: types.ModuleType, dotted: str) -> Any:
    obj: Any = namespace
    for part in dotted.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _model_names(namespace: types.ModuleType) -> list[str]:
    """What --model could name in this file: its nn.Module instances, classes and functions."""
    out = []
    for name, obj in vars(namespace).items():
        if name.startswith("_"):
            continue
        own = getattr(obj, "__module__", None) == namespace.__name__
        if isinstance(obj, nn.Module) or (own and (
                (isinstance(obj, type) and issubclass(obj, nn.Module))
                or isinstance(obj, types.FunctionType))):
            out.append(name)
    return out


def _unbound_params(fn: Callable[..., Any], args: tuple, kwargs: dict) -> list[str] | None:
    """Required parameters that ``args``/``kwargs`` leave unset; None when they do not fit."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return None
    return [p for p in _required_params(fn) if p not in bound.arguments]


def _signature_error(fn: Callable[..., Any], args: tuple, kwargs: dict) -> str:
    try:
        inspect.signature(fn).bind_partial(*args, **kwargs)
    except TypeError as exc:
        params = list(inspect.signature(fn).parameters)
        unknown = [k for k in kwargs if k not in params]
        hint = did_you_mean(unknown[0], params, what="parameters") if unknown else ""
        return f"{getattr(fn, '__name__', fn)}{inspect.signature(fn)}: {exc}{hint}"
    return "arguments do not fit"


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
    build = candidate.factory()
    try:
        with sites.recording(), torch.device("meta"):
            module = build()
    except Exception:
        # Some constructors need real values (``.item()``, numpy); retry on CPU, and report the
        # CPU error if that fails too, since that is the one the user would see.
        try:
            with sites.recording():
                module = build()
        except Exception as exc:
            return None, _build_error(candidate.name, exc, sites.files)
    if not isinstance(module, nn.Module):
        return None, (
            f"could not build {candidate.name}: it returned "
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
