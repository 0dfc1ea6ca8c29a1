"""Evaluate PyTorch's size expressions over many sizes at once, exactly as PyTorch computes them.

``evaluate(expr, values)`` takes a sympy expression from a ``ShapeEnv`` (a guard, or an output
size) and a mapping symbol -> int64 array, and returns an int64, float64 or bool array. There is
no sympy simplification and no lambdify: each node of the expression tree is computed the way
PyTorch computes that function at run time. Integer functions work on int64 (``FloorDiv`` floors
as Python does, ``Mod`` is C's remainder on the non-negative sizes here, ``PythonMod`` Python's),
float functions on float64 in the order of their arguments (``IntTrueDiv(a, b)`` is
``float(a) / float(b)``, ``ToFloat`` a cast, ``TruncToInt`` / ``FloorToInt`` / ``CeilToInt`` /
``RoundToInt`` the casts of ``int()``, ``math.floor``, ``math.ceil``, ``round``). A sum or
product is float when any operand is.

A function it does not know raises :class:`UnknownFunction` naming it; the caller reports the
sizes that need it as undecided, never guesses.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import sympy

__all__ = ["evaluate", "UnknownFunction", "holds"]


class UnknownFunction(Exception):
    """A sympy function this evaluator does not model."""


def holds(exprs: list[Any], values: dict[Any, np.ndarray], length: int) -> np.ndarray:
    """Where every boolean expression in ``exprs`` is true (all True for an empty list)."""
    out = np.ones(length, dtype=bool)
    for expr in exprs:
        out &= np.broadcast_to(np.asarray(evaluate(expr, values), dtype=bool), (length,))
        if not out.any():
            break
    return out


def evaluate(expr: Any, values: dict[Any, np.ndarray]) -> Any:
    """The value of ``expr`` with every symbol replaced by its array in ``values``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _eval(expr, values)


def _is_float(value: Any) -> bool:
    return isinstance(value, float) or (isinstance(value, np.ndarray) and value.dtype.kind == "f")


def _eval(expr: Any, values: dict[Any, np.ndarray]) -> Any:
    if isinstance(expr, (bool, int, float)):
        return expr
    if expr is sympy.true or isinstance(expr, sympy.logic.boolalg.BooleanTrue):
        return True
    if expr is sympy.false or isinstance(expr, sympy.logic.boolalg.BooleanFalse):
        return False
    if expr.is_Symbol:
        if expr not in values:
            raise UnknownFunction(f"symbol {expr} is not an input size")
        return values[expr]
    if expr.is_Integer:
        return int(expr)
    if expr.is_Float:
        return float(expr)
    if expr.is_Rational:  # a rational constant only arises from integer arithmetic in sympy
        return float(expr.p) / float(expr.q)
    if isinstance(expr, sympy.Mod):  # sympy's own Mod is Python's %; PyTorch's Mod is C's
        return _python_mod(expr, values)
    name = type(expr).__name__
    handler = _HANDLERS.get(name)
    if handler is None:
        if isinstance(expr, sympy.Piecewise):
            return _piecewise(expr, values)
        raise UnknownFunction(name)
    return handler(expr, values)


def _args(expr: Any, values: dict) -> list[Any]:
    return [_eval(a, values) for a in expr.args]


def _add(expr, values):
    parts = _args(expr, values)
    is_float = any(_is_float(p) for p in parts)
    total = np.float64(0.0) if is_float else np.int64(0)
    for p in parts:
        total = total + (np.asarray(p, dtype=np.float64) if is_float else np.asarray(p, np.int64))
    return total


def _mul(expr, values):
    parts = _args(expr, values)
    is_float = any(_is_float(p) for p in parts)
    total = np.float64(1.0) if is_float else np.int64(1)
    for p in parts:
        total = total * (np.asarray(p, dtype=np.float64) if is_float else np.asarray(p, np.int64))
    return total


def _pow(expr, values):
    base, exp = _args(expr, values)
    if _is_float(base) or _is_float(exp):
        return np.power(np.asarray(base, np.float64), exp)
    if isinstance(exp, (int, np.integer)) and exp >= 0:
        return np.power(np.asarray(base, np.int64), int(exp))
    # a negative integer power is sympy's spelling of a rational: 1 / x
    return np.power(np.asarray(base, np.float64), float(exp))


def _int(a):
    return np.asarray(a, dtype=np.int64)


def _flt(a):
    return np.asarray(a, dtype=np.float64)


def _floordiv(expr, values):
    a, b = _args(expr, values)
    if _is_float(a) or _is_float(b):
        return np.floor(_flt(a) / _flt(b)).astype(np.int64)
    return np.floor_divide(_int(a), np.where(_int(b) == 0, 1, _int(b)))


def _cleandiv(expr, values):
    return _floordiv(expr, values)


def _ceildiv(expr, values):
    a, b = _args(expr, values)
    return -np.floor_divide(-_int(a), _int(b))


def _python_mod(expr, values):
    a, b = _args(expr, values)
    if _is_float(a) or _is_float(b):
        return np.mod(_flt(a), _flt(b))
    return np.mod(_int(a), np.where(_int(b) == 0, 1, _int(b)))


def _c_mod(expr, values):
    a, b = _args(expr, values)
    return np.fmod(_int(a), np.where(_int(b) == 0, 1, _int(b)))


def _modular_indexing(expr, values):
    base, div, mod = (_int(v) for v in _args(expr, values))
    return np.mod(np.floor_divide(base, div), mod)


def _int_truediv(expr, values):
    a, b = _args(expr, values)
    return _flt(a) / _flt(b)


def _float_truediv(expr, values):
    a, b = _args(expr, values)
    return _flt(a) / _flt(b)


def _to_float(expr, values):
    return _flt(_eval(expr.args[0], values))


def _trunc(expr, values):
    return np.trunc(_flt(_eval(expr.args[0], values))).astype(np.int64)


def _floor_int(expr, values):
    return np.floor(_flt(_eval(expr.args[0], values))).astype(np.int64)


def _ceil_int(expr, values):
    return np.ceil(_flt(_eval(expr.args[0], values))).astype(np.int64)


def _round_int(expr, values):
    return np.rint(_flt(_eval(expr.args[0], values))).astype(np.int64)  # half to even, as round()


def _floor(expr, values):
    v = _eval(expr.args[0], values)
    return np.floor(_flt(v)).astype(np.int64) if _is_float(v) else _int(v)


def _ceiling(expr, values):
    v = _eval(expr.args[0], values)
    return np.ceil(_flt(v)).astype(np.int64) if _is_float(v) else _int(v)


def _pow_natural(expr, values):
    a, b = _args(expr, values)
    return np.power(_int(a), _int(b))


def _float_pow(expr, values):
    a, b = _args(expr, values)
    return np.power(_flt(a), _flt(b))


def _reduce(fn: Callable) -> Callable:
    def apply(expr, values):
        parts = _args(expr, values)
        out = parts[0]
        for p in parts[1:]:
            out = fn(out, p)
        return out
    return apply


def _relation(fn: Callable) -> Callable:
    def apply(expr, values):
        a, b = _args(expr, values)
        return fn(a, b)
    return apply


def _and(expr, values):
    out: Any = True
    for a in expr.args:
        out = np.logical_and(out, _eval(a, values))
    return out


def _or(expr, values):
    out: Any = False
    for a in expr.args:
        out = np.logical_or(out, _eval(a, values))
    return out


def _not(expr, values):
    return np.logical_not(_eval(expr.args[0], values))


def _identity(expr, values):
    return _eval(expr.args[0], values)


def _abs(expr, values):
    return np.abs(_eval(expr.args[0], values))


def _piecewise(expr, values):
    result: Any = None
    chosen: Any = False
    for value, cond in expr.args:
        c = np.asarray(_eval(cond, values), dtype=bool)
        v = _eval(value, values)
        take = np.logical_and(c, np.logical_not(chosen))
        result = v if result is None else np.where(take, v, result)
        chosen = np.logical_or(chosen, c)
    return result


_HANDLERS: dict[str, Callable] = {
    "Add": _add,
    "Mul": _mul,
    "Pow": _pow,
    "FloorDiv": _floordiv,
    "CleanDiv": _cleandiv,
    "CeilDiv": _ceildiv,
    "PythonMod": _python_mod,
    "Mod": _c_mod,
    "ModularIndexing": _modular_indexing,
    "IntTrueDiv": _int_truediv,
    "FloatTrueDiv": _float_truediv,
    "ToFloat": _to_float,
    "TruncToInt": _trunc,
    "FloorToInt": _floor_int,
    "CeilToInt": _ceil_int,
    "RoundToInt": _round_int,
    "floor": _floor,
    "ceiling": _ceiling,
    "PowByNatural": _pow_natural,
    "FloatPow": _float_pow,
    "Max": _reduce(np.maximum),
    "Min": _reduce(np.minimum),
    "Equality": _relation(np.equal),
    "Unequality": _relation(np.not_equal),
    "StrictLessThan": _relation(np.less),
    "LessThan": _relation(np.less_equal),
    "StrictGreaterThan": _relation(np.greater),
    "GreaterThan": _relation(np.greater_equal),
    "And": _and,
    "Or": _or,
    "Not": _not,
    "Identity": _identity,
    "Abs": _abs,
}
