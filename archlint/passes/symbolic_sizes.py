"""Admissible input sizes from symbolic runs: an exact partition of the swept sizes.

The torch frontend leaves ``g.graph["symbolic_runner"]``: a callable ``point -> run`` (see
:mod:`archlint.frontends.torch.symbolic`) that runs the model's own ``forward`` at one point (axis
name -> size) with the sizes as symbols. A run says what happened there and records the guards
under which every other size takes the same path. So:

1. run at the example; the sizes where all its guards hold (evaluated over every swept size at
   once by :mod:`archlint.passes.sizes_eval`) behave as the example does;
2. pick an undecided size, run there: if it raised, every size satisfying the guards recorded up
   to the raise fails the same way; if it ran, those satisfying its guards run;
3. repeat within a budget of runs; what is left is *undecided*, never admissible.

Sweeps: ``square`` (every spatial axis = n), one per axis (the others at the example), and
``batch`` (the batch = n, spatial axes at the example). A size where some axis is 1 is run with
that axis literal (PyTorch specializes sizes 0 and 1) and decides only itself.

The result, :class:`SymbolicSizes`, is ``g.graph["symbolic_sizes"]``; the size sweep adopts its
masks (:meth:`SizeSweep.adopt`), so the JSON, the text and every rule read one answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


#: Re-runs after the example's, and the time they may take together.
MAX_RUNS = 14
MAX_SECONDS = 40.0


@dataclass
class PythonCheck:
    """A raise / assert / torch._check in forward that constrains the input size."""

    file: str
    line: int
    constraint: str          # "H must be a multiple of 32"
    error: str               # what it raised
    fires_at_example: bool


@dataclass
class SymbolicSizes:
    lo: int
    hi: int
    sweeps: tuple[str, ...]                 # "square", axis names..., "batch"
    ok: dict[str, np.ndarray]               # runs (known)
    undecided: dict[str, np.ndarray]
    same_size: dict[str, np.ndarray] | None  # runs and the output keeps the input's size
    reasons: list[str] = field(default_factory=list)  # why sizes are undecided
    checks: list[PythonCheck] = field(default_factory=list)
    failures: dict[str, np.ndarray] = field(default_factory=dict)  # index into runs, -1 unknown
    runs: list[Any] = field(default_factory=list)
    batch_lock: tuple[str, int, str] | None = None
    example_batch: int | None = None

    @property
    def exact(self) -> bool:
        return not any(m.any() for m in self.undecided.values())

    def failure_at(self, sweep: str, n: int) -> Any:
        """The run that shows size ``n`` of ``sweep`` failing, or None."""
        index = int(self.failures[sweep][n - self.lo])
        return self.runs[index] if index >= 0 else None


def symbolic_size_pass(g: Any, lo: int, hi: int) -> SymbolicSizes | None:
    from archlint.passes.sizes_eval import UnknownFunction

    runner: Callable | None = g.graph.get("symbolic_runner")
    example: dict[str, int] | None = g.graph.get("symbolic_example")
    if runner is None or not example:
        return None
    spatial = [a for a in example if a != "batch"]
    sweeps = ("square", *(spatial if len(spatial) > 1 else ()), *(("batch",) if "batch" in example else ()))
    sizes = np.arange(lo, hi + 1, dtype=np.int64)
    n = len(sizes)
    points = _points(example, spatial, sweeps, sizes)
    total = n * len(sweeps)
    state = np.zeros(total, dtype=np.int8)  # 0 undecided, 1 runs, -1 fails
    failure = np.full(total, -1, dtype=np.int32)
    same = np.zeros(total, dtype=bool)
    blocked = np.zeros(total, dtype=bool)  # undecided for good (archlint cannot model it)
    reasons: list[str] = []
    runs: list[Any] = []
    spatial_out = False

    def apply(run: Any, at: int | None) -> None:
        nonlocal spatial_out
        runs.append(run)
        index = len(runs) - 1
        if run.unsupported:
            if at is not None and getattr(run, "point_ok", False) and state[at] == 0:
                state[at] = 1
            elif at is not None:
                blocked[at] = True
            reasons.append(f"{run.unsupported}" + (f" (at {run.error_frame[0]}:{run.error_frame[1]})"
                                                   if run.error_frame else ""))
            return
        try:
            region = _region(run, points, total)
        except UnknownFunction as exc:
            region = np.zeros(total, dtype=bool)
            reasons.append(f"a size expression uses {exc}, which archlint does not evaluate")
        if at is not None:
            region[at] = True  # the run itself is exact at its own point
        region &= state == 0
        state[region] = 1 if run.ok else -1
        if not run.ok:
            failure[region] = index
        elif run.out_spatial is not None:
            spatial_out = True
            np.logical_or(same, _same_size(run, points, spatial, region), out=same)

    started = time.perf_counter()
    example_run = runner(dict(example))
    apply(example_run, _example_index(example, points, total))
    budget = MAX_RUNS
    turn = 0
    while budget > 0 and time.perf_counter() - started < MAX_SECONDS:
        open_ = (state == 0) & ~blocked
        if not open_.any():
            break
        at = _pick(open_, sweeps, n, example, sizes, turn)
        turn += 1
        point = {axis: int(points[axis][at]) for axis in points}
        apply(runner(point), at)
        budget -= 1
    undecided = state == 0
    if undecided.any() and not reasons:
        reasons.append(f"more size regions than the budget of {MAX_RUNS + 1} runs")
    split = lambda mask: {s: mask[i * n:(i + 1) * n].copy() for i, s in enumerate(sweeps)}  # noqa: E731
    result = SymbolicSizes(
        lo=lo, hi=hi, sweeps=sweeps, ok=split(state == 1), undecided=split(undecided),
        same_size=split(same) if spatial_out else None, reasons=reasons,
        failures=split(failure), runs=runs, example_batch=example.get("batch"),
    )
    result.checks = _python_checks(runs, example_run, spatial)
    result.batch_lock = next((r.batch_lock for r in runs if r.batch_lock), None)
    return result


def _points(example: dict[str, int], spatial: list[str], sweeps: tuple[str, ...],
            sizes: np.ndarray) -> dict[str, np.ndarray]:
    """axis -> its value at every point, the sweeps side by side."""
    n = len(sizes)
    out = {axis: np.empty(n * len(sweeps), dtype=np.int64) for axis in example}
    for i, sweep in enumerate(sweeps):
        part = slice(i * n, (i + 1) * n)
        for axis in example:
            varies = (sweep == "square" and axis in spatial) or sweep == axis
            out[axis][part] = sizes if varies else example[axis]
    return out


def _example_index(example: dict[str, int], points: dict[str, np.ndarray], total: int) -> int | None:
    match = np.ones(total, dtype=bool)
    for axis, value in example.items():
        match &= points[axis] == value
    hits = np.flatnonzero(match)
    return int(hits[0]) if len(hits) else None


def _region(run: Any, points: dict[str, np.ndarray], total: int) -> np.ndarray:
    """The points that take this run's path: its literal axes equal, its symbols >= 2, and
    every guard true."""
    from archlint.passes.sizes_eval import holds

    region = np.ones(total, dtype=bool)
    for axis, value in run.fixed.items():
        region &= points[axis] == value
    values = {}
    for symbol, axis in run.symbols.items():
        values[symbol] = points[axis]
        region &= points[axis] >= 2
    if not region.any():
        return region
    return region & holds([g.expr for g in run.guards], values, total)


def _same_size(run: Any, points: dict[str, np.ndarray], spatial: list[str],
               region: np.ndarray) -> np.ndarray:
    from archlint.passes.sizes_eval import UnknownFunction, evaluate

    out = run.out_spatial
    if out is None or len(out) != len(spatial):
        return np.zeros(len(region), dtype=bool)
    values = {symbol: points[axis] for symbol, axis in run.symbols.items()}
    equal = np.ones(len(region), dtype=bool)
    try:
        for expr, axis in zip(out, spatial):
            equal &= np.asarray(evaluate(expr, values)) == points[axis]
    except UnknownFunction:
        return np.zeros(len(region), dtype=bool)
    return equal & region


def _pick(open_: np.ndarray, sweeps: tuple[str, ...], n: int, example: dict[str, int],
          sizes: np.ndarray, turn: int) -> int:
    """An undecided point: sweeps in turn, the size nearest the example first."""
    for k in range(len(sweeps)):
        i = (turn + k) % len(sweeps)
        part = open_[i * n:(i + 1) * n]
        if not part.any():
            continue
        sweep = sweeps[i]
        ref = example.get(sweep, next(v for a, v in example.items() if a != "batch"))
        candidates = np.flatnonzero(part)
        best = candidates[np.argmin(np.abs(sizes[candidates] - ref))]
        return i * n + int(best)
    return int(np.flatnonzero(open_)[0])


# -- Python checks -----------------------------------------------------------------------------

LETTERS = {"batch": "N", "length": "L", "depth": "D", "height": "H", "width": "W"}


def _python_checks(runs: list[Any], example_run: Any, spatial: list[str]) -> list[PythonCheck]:
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
    return render(sympy.Not(guards[-1].expr), names)


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


# -- graphs the formulas already model exactly --------------------------------------------------

#: Ops that act on each sample alone and whose size formulas are exact: a graph of only these
#: (fx-traced, reading no size, holding no constant tensor) runs at every batch, and its
#: formulas are the admissible set.
PER_SAMPLE_OPS = frozenset({
    "input", "output", "conv", "conv_transpose", "max_pool", "avg_pool", "adaptive_pool",
    "global_pool", "upsample", "pad", "add", "mul", "sub", "norm", "pointwise", "linear",
    "pixel_shuffle", "pixel_unshuffle",
})


def formula_is_exact(g: Any, sweep: Any) -> bool:
    """True when the formula sweep is already the exact answer: an fx-traced graph with no
    size read in forward (no Python can branch on a size), no constant tensor, every op per
    sample with an exact formula, and none unknown."""
    if g.graph.get("graph_module") is None or g.graph.get("reads_sizes", True) or sweep.unknown:
        return False
    for name in g.nodes:
        data = g.nodes[name]
        op = data["op"]
        if op == "concat":
            axis = 1 if data["attrs"].axis is None else data["attrs"].axis
            if axis <= 0:  # the batch axis, or a negative one that may be
                return False
            continue
        if op == "flatten":
            if (data["attrs"].axis if data["attrs"].axis is not None else 1) == 0:
                return False
            continue
        if op not in PER_SAMPLE_OPS:
            return False
    return True


def from_formulas(g: Any, sweep: Any) -> SymbolicSizes:
    """The exact result of a graph :func:`formula_is_exact` accepts: every batch runs."""
    sizes = len(sweep.sizes)
    ok = {s: sweep.admissible_for(s) for s in sweep.sweeps}
    sweeps = (*sweep.sweeps, "batch")
    ok["batch"] = np.ones(sizes, dtype=bool)
    undecided = {s: np.zeros(sizes, dtype=bool) for s in sweeps}
    same = _formula_same_size(g, sweep)
    result = SymbolicSizes(lo=sweep.lo, hi=sweep.hi, sweeps=sweeps, ok=ok, undecided=undecided,
                           same_size=same, failures={s: np.full(sizes, -1) for s in sweeps})
    return result


def _formula_same_size(g: Any, sweep: Any) -> dict[str, np.ndarray] | None:
    outputs = [n for n in g.nodes if g.nodes[n]["op"] == "output"]
    inputs = [n for n in g.nodes if g.nodes[n]["op"] == "input"]
    if not outputs or not inputs:
        return None
    out = g.nodes[outputs[0]]["inputs"][0] if g.nodes[outputs[0]]["inputs"] else None
    shapes = g.nodes[out].get("shapes") if out is not None else None
    in_shapes = g.nodes[inputs[0]].get("shapes")
    if not shapes or not in_shapes or shapes[0] is None or len(shapes[0]) != len(in_shapes[0]):
        return None
    result = {}
    for s in sweep.sweeps:
        out_axes, in_axes = sweep.spatial(out, s), sweep.spatial(inputs[0], s)
        if out_axes is None or in_axes is None:
            return None
        same = np.ones(len(sweep.sizes), dtype=bool)
        for a, b in zip(out_axes, in_axes):
            same &= a == b
        result[s] = same
    return result
