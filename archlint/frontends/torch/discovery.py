"""Find and import models: import a ``.py`` file as a fresh module, discover its models
(``--model``, module-level instances, zero-argument classes) and build them on the meta device."""


from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import os
import re
import sys
import textwrap
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from archlint.frontends import TargetError
from archlint.frontends.torch.locate import (
    ConstructionSites,
    _FileNames,
    _one_line,
    _user_frame_of,
)

_module_ids = itertools.count()


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
