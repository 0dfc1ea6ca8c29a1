"""When the sweep pins sizes to residue classes, and what a pinned run's symbols mean.

A plain symbolic run that does not finish within :data:`SLOW_RUN` CPU seconds (nested padding
and halving make sympy slow, see :mod:`archlint.frontends.torch.symbolic_pin`) is stopped. The
floor divisions and remainders it had built say which modulus ``m`` folds them
(:func:`~archlint.frontends.torch.symbolic_pin.modulus_of`); the example is then run again with
every spatial size pinned to its class ``m*q + r``. If that run is still slow, the modulus its
own expressions ask for multiplies ``m``, a few times at most. Every later run of the sweep is
pinned to its point's classes, so a run decides the sizes of its classes only, each exactly
(:func:`run_pinned`; the first period of a class runs with literal sizes), and the square sweep
is decided first (``_Partition.pick``).
A model whose plain run is quick never gets here: its behaviour and speed stay as they were.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

#: CPU seconds a plain run at the example may take before pinning is tried.
SLOW_RUN = 20.0
#: Pinned runs at the example tried, each with a larger modulus.
MAX_TRIES = 3


def first_run(runner: Callable, example: dict[str, int], spatial: list[str]) -> tuple[Any, int]:
    """The run at the example and the modulus the sweep pins to (0: not pinned)."""
    from archlint.frontends.torch.symbolic_pin import MAX_MODULUS, modulus_of

    run = runner(dict(example), deadline=SLOW_RUN)
    if not getattr(run, "too_slow", False):
        return run, 0
    m = 1
    for _ in range(MAX_TRIES):
        exprs = [*run.seen_sizes, *(g.expr for g in run.guards)]
        more = modulus_of(exprs, set(run.symbols))
        if more <= 1 or m * more > MAX_MODULUS:
            break
        m *= more
        run = runner(dict(example), pins=pins_at(example, spatial, m), deadline=SLOW_RUN)
        if not run.too_slow:
            return run, m
    started = time.process_time()
    run = runner(dict(example))  # pinning does not help: the plain run, however long it takes
    run.seconds = max(run.seconds, time.process_time() - started)
    return run, 0


def pins_at(point: dict[str, int], spatial: list[str], modulus: int) -> dict[str, Any] | None:
    """axis -> the class of its size at ``point``, for every spatial axis of size >= 2."""
    from archlint.frontends.torch.symbolic_pin import Pin

    if not modulus:
        return None
    return {axis: Pin.of(point[axis], modulus) for axis in spatial if point[axis] >= 2}


def in_classes(run: Any, points: dict[str, np.ndarray], total: int) -> np.ndarray:
    """The points in every pinned class of ``run`` with ``q >= 1`` (all points when unpinned)."""
    mask = np.ones(total, dtype=bool)
    for symbol, pin in getattr(run, "pins", {}).items():
        mask &= pin.holds(points[run.symbols[symbol]])
    return mask


def pinned_value(run: Any, symbol: Any, axis_values: np.ndarray) -> np.ndarray | None:
    """``q = (size - r) // m`` for a pinned symbol, None for a plain one."""
    pin = getattr(run, "pins", {}).get(symbol)
    return None if pin is None else pin.q(axis_values)


def class_key(pins: dict[str, Any]) -> tuple:
    """The residue classes of a pinned point, by axis name."""
    return tuple(sorted((axis, pin.residue) for axis, pin in pins.items()))


def run_pinned(runner: Callable, point: dict[str, int], spatial: list[str], modulus: int,
               literal_classes: frozenset | set = frozenset()) -> Any:
    """The run of a pinned sweep at ``point``. Where a spatial size is in its class's first
    period (``q == 1``: below ``m + 2``), the sizes there are few and often each its own case (a
    Swin shrinks its window to a small input): the spatial sizes are literals, a run five times
    cheaper that decides its point exactly. So are the sizes of a class in ``literal_classes``,
    where a pinned run decided only its own size (``int(np.ceil(h / window))`` in MONAI's
    SwinUNETR turns q into a number): pinned or not, such a run decides one size."""
    pins = pins_at(point, spatial, modulus) or {}
    if class_key(pins) in literal_classes or any(pin.q(point[axis]) == 1
                                                 for axis, pin in pins.items()):
        return runner(point, frozenset(a for a in point if a not in spatial), deadline=SLOW_RUN)
    return runner(point, pins=pins, deadline=SLOW_RUN)
