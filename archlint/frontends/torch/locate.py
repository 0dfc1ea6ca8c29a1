"""Source locations: user files versus torch/archlint files, where each layer was constructed, and
the forward line or user frame behind an error."""


from __future__ import annotations

import ast
import contextlib
import inspect
import os
import sys
import textwrap
import traceback
import types
import weakref
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_ARCHLINT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep




class _FileNames:
    """Maps code filenames to what a Location shows: the target as the user spelled it."""

    def __init__(self, target: Path | None):
        self.target = target
        self._target_abs = os.path.abspath(target) if target is not None else None
        # a target spelled relative to the working directory: its helpers are shown so too
        relative = target is not None and not os.path.isabs(target)
        self._cwd = os.getcwd() + os.sep if relative else None

    def display(self, filename: str) -> str:
        absolute = os.path.abspath(filename)
        if self._target_abs is not None and absolute == self._target_abs:
            return str(self.target)
        if self._cwd is not None and absolute.startswith(self._cwd):
            return absolute[len(self._cwd):]
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


def _innermost_user_frame(frame: types.FrameType | None) -> tuple[str, int] | None:
    while frame is not None:
        if _is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None
