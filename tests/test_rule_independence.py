"""Rules never import each other: facts two rules share are passes (archlint/passes), and
shared helpers live in private modules (rules/_topology.py), so any one rule module can be
removed without breaking the rest."""

from __future__ import annotations

import ast
from pathlib import Path

RULES = Path(__file__).resolve().parents[1] / "rules"
RULE_MODULES = {p.stem for p in RULES.glob("*.py") if not p.stem.startswith("_")}


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("archlint_rules."):
            found.add(node.value)  # importlib.import_module("archlint_rules.x")
    return found


def test_rule_modules_exist():
    assert {"skip_connection_mismatch", "odd_size_stride2", "shape_propagation_error"} <= RULE_MODULES


def test_no_rule_imports_another_rule():
    offenders = []
    for path in sorted(RULES.glob("*.py")):
        for name in _imported_modules(ast.parse(path.read_text(), str(path))):
            parts = name.split(".")
            if parts[0] in ("archlint_rules", "rules") and len(parts) > 1 \
                    and parts[1] in RULE_MODULES and parts[1] != path.stem:
                offenders.append(f"{path.name} imports {name}")
    assert not offenders, offenders


def test_the_check_sees_an_import_of_a_rule():
    tree = ast.parse("def f():\n    from archlint_rules.odd_size_stride2 import rounding_at\n")
    assert "archlint_rules.odd_size_stride2" in _imported_modules(tree)
