"""A cheap AST pre-filter: could this ``.py`` file define or create an ``nn.Module``?

The CLI runs it on the ``.py`` files it finds in a directory before importing anything, so that
a folder of plain scripts and helpers never costs a ``torch`` import. It never imports torch
and errs on the side of ``True``: a false ``True`` costs one import, a false ``False`` hides a
model. (A file named explicitly, or with ``--model``, should be captured regardless.)
"""

from __future__ import annotations

import ast
import re
import sys

__all__ = ["building_block_classes", "defines_models", "holds_only_building_blocks"]

#: Cheap textual gate: a file that mentions none of these cannot hold a model.
_MENTIONS = re.compile(r"torch|Module|Sequential|import")
#: Base-class names that make a class a model (``nn.Module``, ``LightningModule``, ...).
_MODEL_BASE = re.compile(r"(Module|Sequential|ModuleList|ModuleDict)$")
#: Bases that certainly do not make an nn.Module.
_PLAIN_BASES = frozenset(
    {"object", "Exception", "ValueError", "RuntimeError", "TypeError", "Enum", "IntEnum",
     "StrEnum", "Flag", "NamedTuple", "TypedDict", "Protocol", "ABC", "dict", "list", "tuple",
     "str", "int", "float", "Generic", "Dataset", "IterableDataset", "Sampler", "Function"}
)


def defines_models(text: str, *, named: bool = False) -> bool:
    """True when ``text`` could define or create an ``nn.Module`` (conservative).

    ``named``: the user named this file, so a module-level call after *any* non-stdlib import
    (``from lib import make; model = make()``) may build a model. In a folder walk only torch
    and relative imports count, so that numpy scripts are skipped without an import.

    >>> defines_models("import torch.nn as nn\\nclass Net(nn.Module): pass")
    True
    >>> defines_models("import torch\\ndef helper(x):\\n    return x * 2")
    False
    >>> defines_models("print('hello')")
    False
    """
    if not _MENTIONS.search(text):
        return False
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return True  # let the frontend report the syntax error
    uses_torch = any(
        isinstance(node, (ast.Import, ast.ImportFrom)) and _may_bring_modules(node, named)
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _could_be_model_class(node, uses_torch):
            return True
    # ``model = nn.Sequential(...)`` / ``model = resnet18()``: a module-level call may build one.
    return uses_torch and any(_assigns_a_call(stmt) for stmt in _module_level(tree.body))


def holds_only_building_blocks(text: str) -> bool:
    """True when every class that may be an ``nn.Module`` needs constructor arguments and nothing
    at module level builds one: a library of layers (``class Block(nn.Module): def
    __init__(self, channels)``), linted where a model uses it. Conservative: False when unsure.

    >>> holds_only_building_blocks("import torch.nn as nn\\nclass B(nn.Module):\\n"
    ...     "    def __init__(self, c):\\n        super().__init__()")
    True
    >>> holds_only_building_blocks("import torch.nn as nn\\nclass B(nn.Module):\\n"
    ...     "    def __init__(self, c=3):\\n        super().__init__()")
    False
    """
    return bool(building_block_classes(text))


def building_block_classes(text: str) -> list[str]:
    """The names of the model classes of ``text`` when they all need constructor arguments and
    nothing at module level builds one (see :func:`holds_only_building_blocks`), else []."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and _could_be_model_class(n, True)]
    if not classes or any(_assigns_a_call(stmt) for stmt in _module_level(tree.body)):
        return []
    return [c.name for c in classes] if all(_init_needs_arguments(c) for c in classes) else []


def _init_needs_arguments(node: ast.ClassDef) -> bool:
    init = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"),
                None)
    if init is None:
        return False
    a = init.args
    positional = [*a.posonlyargs, *a.args][1:]  # past self
    without_default = len(positional) - len(a.defaults)
    return without_default > 0 or any(d is None for d in a.kw_defaults)


def _could_be_model_class(node: ast.ClassDef, uses_torch: bool) -> bool:
    for base in node.bases:
        name = _base_name(base)
        if name is None or _MODEL_BASE.search(name):
            return True  # ``class Net(make_base())`` cannot be told apart: assume a model
        if uses_torch and name not in _PLAIN_BASES:
            return True  # ``class Net(BaseNet)`` in a torch file: BaseNet may be a Module
    return False


def _base_name(base: ast.expr) -> str | None:
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    if isinstance(base, ast.Subscript):  # Generic[T]-style bases
        return _base_name(base.value)
    return None


def _module_level(body: list[ast.stmt]):
    """Statements run at import: the top level and the blocks of top-level if/try/with."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.With, ast.Try)):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _module_level(handler.body)


def _assigns_a_call(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        return any(isinstance(n, ast.Call) for n in ast.walk(stmt.value))
    return False


def _may_bring_modules(node: ast.Import | ast.ImportFrom, named: bool) -> bool:
    """torch or a sibling (relative) import; for a named file, any non-stdlib import (a model
    zoo package, a ``layers.py`` next to it)."""
    names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    if isinstance(node, ast.ImportFrom) and node.level:
        return True
    roots = {name.split(".")[0] for name in names}
    if named:
        return any(root not in sys.stdlib_module_names for root in roots)
    return "torch" in roots
