"""Python checks in forward (a ``raise``, ``assert`` or ``torch._check`` that constrains the
input size) found by the symbolic runs, and the constraint each names, in words: "H and W must
be multiples of 32". The sizes pass attaches them to its result; the sizes rules report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PythonCheck:
    """A raise / assert / torch._check in forward that constrains the input size."""

    file: str
    line: int
    constraint: str          # "H must be a multiple of 32"
    error: str               # what it raised
    fires_at_example: bool


LETTERS = {"batch": "N", "length": "L", "depth": "D", "height": "H", "width": "W"}


def python_checks(runs: list[Any], example_run: Any, spatial: list[str]) -> list[PythonCheck]:
    found: dict[tuple[str, int], tuple[set[str], str, bool]] = {}
    for run in runs:
        if run.ok or run.unsupported or not run.python_check or run.error_frame is None:
            continue
        key = run.error_frame
        constraints, error, fires = found.get(key, (set(), run.error, False))
        constraint = _constraint(run)
        if constraint:
            constraints.add(constraint)
        if run is example_run:
            error, fires = run.error, True
        found[key] = (constraints, error, fires)
    return [PythonCheck(file, line, _join(constraints), error, fires)
            for (file, line), (constraints, error, fires) in found.items()]


def _constraint(run: Any) -> str | None:
    """What must hold to pass the check: the negation of the last guard before the raise."""
    import sympy

    guards = [g for g in run.guards if g.frame == run.error_frame] or run.guards
    if not guards or run.fixed and set(run.fixed) != {"batch"}:
        return None  # a size-1 run raises without deciding anything on a symbol
    names = {symbol: LETTERS.get(axis, axis) for symbol, axis in run.symbols.items()}
    expr = guards[-1].expr
    if getattr(run, "pins", None):  # q -> (H - r) / m: the constraint in the input's size
        sizes = {q: sympy.Symbol(names[q], integer=True) for q in run.pins}
        expr = expr.xreplace({q: (sizes[q] - p.residue) / p.modulus for q, p in run.pins.items()})
        names = {**{s: n for s, n in names.items() if s not in sizes},
                 **{v: names[q] for q, v in sizes.items()}}
    return render(sympy.Not(expr), names)


def _join(constraints: set[str]) -> str:
    """"H must be a multiple of 32" + "W must be ..." -> "H and W must be multiples of 32"."""
    if not constraints:
        return "the input size is constrained"
    by_tail: dict[str, list[str]] = {}
    other = []
    for c in sorted(constraints):
        if " must be a multiple of " in c:
            axis, tail = c.split(" must be a multiple of ")
            by_tail.setdefault(tail, []).append(axis)
        else:
            other.append(c)
    order = "NDHWL"
    parts = []
    for tail, axes in by_tail.items():
        axes = sorted(set(axes), key=lambda a: order.index(a) if a in order else 9)
        if len(axes) == 1:
            parts.append(f"{axes[0]} must be a multiple of {tail}")
        else:
            parts.append(f"{', '.join(axes[:-1])} and {axes[-1]} must be multiples of {tail}")
    return "; ".join(parts + other[:2])


def render(expr: Any, names: dict[Any, str]) -> str:
    """A guard in words: "H must be a multiple of 32", else "needs H >= 32"."""
    import sympy

    if isinstance(expr, sympy.Eq) and expr.rhs == 0 and type(expr.lhs).__name__ in (
            "Mod", "PythonMod") and expr.lhs.args[0] in names and expr.lhs.args[1].is_Integer:
        return f"{names[expr.lhs.args[0]]} must be a multiple of {expr.lhs.args[1]}"
    text = str(expr.xreplace({s: sympy.Symbol(v) for s, v in names.items()}))
    for a, b in (("Eq(", "=="), ("Ne(", "!=")):
        if text.startswith(a) and text.endswith(")") and text.count(",") == 1:
            left, right = text[len(a):-1].split(",")
            text = f"{left.strip()} {b} {right.strip()}"
    return f"needs {text}"
