"""Pinned symbolic inputs: a spatial size written ``m*q + r`` with a fresh symbol ``q >= 1``.

A plain symbolic run has one symbol per input size, and a model that pads to a multiple of its
window, halves, and pads again builds nested ``FloorDiv`` / ``Mod`` expressions that sympy
simplifies at every ``view`` (Hugging Face's Swin spends minutes there). Pinned to one residue
class ``H = m*q + r``, every ``FloorDiv`` or ``Mod`` by a divisor of ``m`` folds to a linear
expression of ``q`` at once, and the run takes seconds. Its guards, in ``q``, hold exactly for
the sizes of that residue class (``q = (H - r) / m``).

The residue ``r`` is taken in ``[2 - m, 1]`` so that ``q >= 1`` covers every size ``>= 2`` of the
class: ``q`` is a positive size symbol whose range starts at 0 (not 2, as input sizes do), so no
size of the class is assumed away. :func:`modulus_of` reads the ``m`` that makes the
expressions of a run linear from the expressions themselves.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

#: The largest modulus worth pinning to: each residue class needs its own run.
MAX_MODULUS = 64


@dataclass(frozen=True)
class Pin:
    """Sizes ``modulus*q + residue`` of one axis (``residue`` in ``[2 - modulus, 1]``)."""

    modulus: int
    residue: int

    @staticmethod
    def of(value: int, modulus: int) -> "Pin":
        """The class of ``value`` (>= 2) with its residue in ``[2 - modulus, 1]``."""
        return Pin(modulus, (value - 2) % modulus + 2 - modulus)

    def q(self, value: Any) -> Any:
        return (value - self.residue) // self.modulus

    def holds(self, value: Any) -> Any:
        """Where ``value`` is in this class with ``q >= 1`` (numpy arrays or ints)."""
        return ((value - self.residue) % self.modulus == 0) & (value - self.residue >= self.modulus)


def pinned_inputs(mode: Any, leaves: list[Any], point: dict[str, int], pins: dict[str, Pin],
                  symbolic: frozenset[str] | None, device: str, run: Any) -> list[Any]:
    """Fake inputs at ``point`` whose pinned axes are ``m*q + r`` and whose other symbolic axes
    (the batch) are plain size symbols, one symbol per axis shared by every input. Fills
    ``run.symbols`` (symbol -> axis), ``run.pins`` (q -> its pin) and ``run.fixed``."""
    import torch
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic

    env = mode.shape_env
    sizes: dict[str, Any] = {}
    for axis, value in point.items():
        if value < 2 or (symbolic is not None and axis not in symbolic):
            continue
        pin = pins.get(axis)
        if pin is None:
            s = env.create_symbol(value, ConstantSource(f"size_{axis}"),
                                  dynamic_dim=DimDynamic.DYNAMIC)
            sizes[axis] = env.create_symintnode(s, hint=value)
            run.symbols[s] = axis
            continue
        if not pin.holds(value):
            raise ValueError(f"{axis}={value} is not in the class {pin}")
        q = env.create_symbol(pin.q(value), ConstantSource(f"pinned_{axis}"),
                              dynamic_dim=DimDynamic.DYNAMIC, do_not_specialize_zero_one=True)
        sizes[axis] = env.create_symintnode(pin.modulus * q + pin.residue, hint=value)
        run.symbols[q] = axis
        run.pins[q] = pin
    fakes = []
    for leaf in leaves:
        shape = []
        for i, axis in enumerate(leaf.axes):
            name = axis[0] if axis is not None and axis[0] in point else None
            size = scaled(sizes[name], axis[1]) if name in sizes else leaf.size_at(i, point)
            if size is None:
                raise ValueError(f"no whole size for input {leaf.shape} at {point}")
            if name is not None and name not in sizes:
                run.fixed[name] = point[name]
            shape.append(size)
        with mode:
            fakes.append(torch.empty(shape, dtype=leaf.dtype, device=device))
    return fakes


def scaled(size: Any, ratio: Fraction) -> Any:
    """A pinned size times an input's ratio (n/2 for an input half the first's); None when that
    is not a whole expression of ``q``."""
    if ratio == 1:
        return size
    import sympy

    expr = sympy.expand(size.node.expr * sympy.Rational(ratio.numerator, ratio.denominator))
    if any(not c.is_Integer for c in sympy.Poly(expr).coeffs()):
        return None
    return size.node.shape_env.create_symintnode(
        expr, hint=int(size.node.hint * ratio))


# -- the modulus ---------------------------------------------------------------------------------

def modulus_of(exprs: list[Any], symbols: set[Any]) -> int:
    """The ``m`` such that, with every symbol ``s = m*q_s + r_s``, each floor division or
    remainder by a constant in ``exprs`` folds away (an upper bound; 1 when none reads a size).
    Stops early past :data:`MAX_MODULUS`."""
    memo: dict[Any, tuple[int, int | None]] = {}
    m = 1
    for expr in exprs:
        m = math.lcm(m, _period(expr, symbols, memo)[0])
        if m > MAX_MODULUS:
            break
    return m


_DIVISIONS = ("FloorDiv", "CleanDiv", "CeilDiv", "Mod", "PythonMod")


def _period(expr: Any, symbols: set[Any], memo: dict) -> tuple[int, int | None]:
    """(M, c): with every symbol ``s = M*q_s + r_s``, ``expr`` is a polynomial in the q's whose
    non-constant coefficients are all multiples of ``c`` (0: constant; None: not a polynomial,
    as after a division by a size)."""
    if expr in symbols:
        return 1, 1
    if not hasattr(expr, "args") or not (getattr(expr, "free_symbols", set()) & symbols):
        return 1, 0
    if expr in memo:
        return memo[expr]
    name = type(expr).__name__
    parts = [_period(a, symbols, memo) for a in expr.args]
    period = math.lcm(*(p[0] for p in parts))
    coeffs = [None if c is None else c * (period // m) for m, c in parts]
    result: tuple[int, int | None] = (period, None)
    if name in ("Add", "Mul") and None not in coeffs:
        symbolic = [c for c, a in zip(coeffs, expr.args) if not a.is_Integer]
        scale = math.prod(abs(int(a)) for a in expr.args if a.is_Integer) if name == "Mul" else 1
        result = (period, math.gcd(*symbolic) * scale)
    elif name in _DIVISIONS and len(expr.args) == 2 and expr.args[1].is_Integer:
        k, c = abs(int(expr.args[1])), coeffs[0]
        # a division of what is no polynomial does not fold at any m: it asks for nothing
        t = k // math.gcd(k, c) if c is not None else 1
        result = (period * t, None if c is None else 0 if name in ("Mod", "PythonMod") else c * t // k)
    memo[expr] = result
    return result


# -- folding a residue class's remainders --------------------------------------------------------

def _fold_multiples(p: Any, k: Any) -> Any:
    """``p`` less its terms that are integer multiples of the integer ``k``, its constant taken
    modulo ``k`` (``p mod k`` is unchanged), or None when nothing folds."""
    import sympy

    if not (k.is_Integer and k > 1 and isinstance(p, sympy.Add)):
        return None
    kept, constant, changed = [], sympy.Integer(0), False
    for term in p.args:
        if term.is_Integer:
            constant = term
        elif (term / k).is_integer:
            changed = True
        else:
            kept.append(term)
    folded = constant % k
    if not changed and folded == constant:
        return None
    return sympy.Add(*kept, folded)


@contextlib.contextmanager
def folded_remainders():
    """PyTorch's ``Mod`` and ``PythonMod`` fold ``(m*q + r) mod k`` to ``r mod k`` when ``k``
    divides ``m`` (sympy's own ``Mod`` does; PyTorch's only folds a whole multiple), for the
    duration of a pinned run. Without it a pinned size still nests remainders and the run stays
    slow. Both functions compute ``p mod k`` for ``p >= 0``, which the folding preserves."""
    from torch.utils._sympy import functions

    classes = [getattr(functions, name, None) for name in ("Mod", "PythonMod")]
    originals = {cls: cls.__dict__["eval"] for cls in classes
                 if isinstance(getattr(cls, "__dict__", {}).get("eval"), classmethod)}
    if len(originals) != len(classes):
        # a torch whose Mod/PythonMod are built otherwise: the pinned run goes on unfolded
        # (slower, and the budget may leave more undecided, but every answer stays exact)
        yield
        return

    def folding(cls: Any, p: Any, q: Any) -> Any:
        folded = _fold_multiples(p, q)
        # PyTorch's Mod is C's remainder on p >= 0: fold only into what stays non-negative
        if folded is not None and (cls is functions.PythonMod or folded.is_nonnegative):
            return cls(folded, q)
        return originals[cls].__func__(cls, p, q)

    for cls in originals:
        cls.eval = classmethod(folding)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.eval = original
