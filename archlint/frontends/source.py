"""A cheap AST pre-filter: could this ``.py`` file define or create an ``nn.Module``?

The CLI runs it on every ``.py`` file it is given (or finds in a directory) before importing
anything, so that a folder of plain scripts never costs a ``torch`` import. It never imports
torch and errs on the side of ``True``: a false ``True`` costs one import, a false ``False``
hides a model.
"""

from __future__ import annotations

import ast
import re

__all__ = ["defines_models"]

#: Cheap textual gate: no mention of torch, Module or Sequential means no model.
_MENTIONS = re.compile(r"torch|Module|Sequential")
#: Base-class names that make a class a model (``nn.Module``, ``LightningModule``, ...).
_MODEL_BASE = re.compile(r"(Module|Sequential|ModuleList|ModuleDict)$")


def defines_models(text: str) -> bool:
    """True when ``text`` could define or create an ``nn.Module`` (conservative).

    >>> defines_models("import torch.nn as nn\\nclass Net(nn.Module): pass")
    True
    >>> defines_models("print('hello')")
    False
    """
    if not _MENTIONS.search(text):
        return False
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return True  # let the frontend report the syntax error
    imports_torch = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_is_model_base(b) for b in node.bases):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_torch(node):
            imports_torch = True
    # A file that imports torch may build models from library classes or factories
    # (``model = nn.Sequential(...)``, ``model = resnet18()``): only the import can tell.
    return imports_torch


def _is_model_base(base: ast.expr) -> bool:
    name = _dotted_name(base)
    if name is None:
        return True  # ``class Net(make_base())``: cannot tell, assume a model
    return bool(_MODEL_BASE.search(name.rsplit(".", 1)[-1]))


def _dotted_name(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Subscript):  # Generic[...] style bases
        return _dotted_name(expr.value)
    return None


def _imports_torch(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative import of a sibling file: it may hold the model
            return True
        return (node.module or "").split(".")[0] == "torch"
    return any(alias.name.split(".")[0] == "torch" for alias in node.names)
