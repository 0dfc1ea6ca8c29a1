"""Admissible input sizes from symbolic runs: an exact partition of the swept sizes.

The torch frontend leaves ``g.graph["symbolic_runner"]``: a callable ``(point, symbolic axes)
-> run`` (see :mod:`archlint.frontends.torch.symbolic`) that runs the model's own ``forward`` at
one point (axis name -> size) with those axes' sizes as symbols. A run says what happened there
and records the guards under which every other size takes the same path. So:

1. run at the example; the sizes where all its guards hold (evaluated over every swept size at
   once by :mod:`archlint.passes.sizes_eval`) behave as the example does;
2. group the sizes still undecided by the truth of every guard seen so far (sizes that agree on
   all of them are likely on one path), and run at one size of the largest group: if it raised,
   every size satisfying the guards recorded up to the raise fails the same way; if it ran,
   those satisfying its guards run. A new guard splits its group for the next pick;
3. repeat within a time budget; what is left is *undecided*, never admissible, with the reason.

Sweeps: ``square`` (every spatial axis = n), one per axis (the others at the example), and
``batch`` (the batch = n, spatial axes at the example). A size where some axis is 1 is run with
that axis literal (PyTorch specializes sizes 0 and 1) and decides only itself. Every other
size is a symbol in every run, so one run can decide sizes of several sweeps.

The result, :class:`SymbolicSizes`, is ``g.graph["symbolic_sizes"]``; the size sweep adopts its
masks (:meth:`SizeSweep.adopt`), so the JSON, the text and every rule read one answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from archlint.passes.python_checks import PythonCheck, python_checks
from archlint.passes.symbolic_pinning import class_key, first_run, in_classes, run_pinned


#: CPU seconds the runs after the example's may take together (this process's CPU time: a busy
#: machine does not cut the runs short), and a cap on their count.
MAX_SECONDS = 60.0
MAX_RUNS = 200


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
    seconds: float = 0.0
    modulus: int = 0  # runs pinned sizes to residue classes modulo this (0: plain runs)

    @property
    def exact(self) -> bool:
        return not any(m.any() for m in self.undecided.values())

    def failure_at(self, sweep: str, n: int) -> Any:
        """The run that shows size ``n`` of ``sweep`` failing, or None."""
        index = int(self.failures[sweep][n - self.lo])
        return self.runs[index] if index >= 0 else None


def symbolic_size_pass(g: Any, lo: int, hi: int,
                       budget: float = MAX_SECONDS) -> SymbolicSizes | None:
    runner: Callable | None = g.graph.get("symbolic_runner")
    example: dict[str, int] | None = g.graph.get("symbolic_example")
    if runner is None or not example:
        return None
    spatial = [a for a in example if a != "batch"]
    sweeps = ("square", *(spatial if len(spatial) > 1 else ()),
              *(("batch",) if "batch" in example else ()))
    sizes = np.arange(lo, hi + 1, dtype=np.int64)
    partition = _Partition(example, spatial, sweeps, sizes, getattr(runner, "leaves", None))
    started = time.perf_counter()
    first, partition.modulus = first_run(runner, example, spatial)
    partition.apply(first, partition.example_index())
    cpu_started = time.process_time()
    while partition.runs_made < MAX_RUNS:
        at = partition.pick()
        if at is None:
            break
        if time.process_time() - cpu_started > budget:
            partition.note(f"the budget of {budget:.0f} CPU seconds for symbolic runs ran out "
                           f"after {len(partition.runs)} runs")
            break
        point = partition.point(at)
        if partition.modulus:
            partition.apply(run_pinned(runner, point, spatial, partition.modulus,
                                       partition.literal_classes), at)
        else:
            partition.apply(runner(point), at)
    else:
        partition.note(f"more size regions than the {MAX_RUNS} runs allowed")
    result = partition.result(lo, hi)
    result.seconds = time.perf_counter() - started
    result.modulus = partition.modulus
    result.checks = python_checks(partition.runs, partition.runs[0], spatial)
    result.batch_lock = next((r.batch_lock for r in partition.runs if r.batch_lock), None)
    return result


class _Partition:
    """The state of the sweep: which points (sizes of every sweep, side by side) run, fail or
    are undecided, the runs made, and every guard seen, as a truth vector over the points."""

    def __init__(self, example: dict[str, int], spatial: list[str], sweeps: tuple[str, ...],
                 sizes: np.ndarray, leaves: Any) -> None:
        self.example, self.spatial, self.sweeps, self.sizes = example, spatial, sweeps, sizes
        self.n = len(sizes)
        self.points = _points(example, spatial, sweeps, sizes)
        self.total = self.n * len(sweeps)
        self.state = np.zeros(self.total, dtype=np.int8)  # 0 undecided, 1 runs, -1 fails
        self.failure = np.full(self.total, -1, dtype=np.int32)
        self.same = np.zeros(self.total, dtype=bool)
        self.blocked = np.zeros(self.total, dtype=bool)  # undecided for good
        self.spatial_out = False
        self.modulus = 0  # sizes pinned to residue classes modulo this (0: not pinned)
        self.literal_classes: set[tuple] = set()  # pinned runs there decide one size
        self.runs: list[Any] = []
        self.runs_made = 0
        self.reasons: list[str] = []
        self._rng = np.random.default_rng(0)
        # what every point's signature starts from: which axes are 1 (traced as literals)
        # and whether the batch is the example's (runs of the two kinds differ)
        self.signature = np.zeros(self.total, dtype=np.uint64)
        self._mixed: set[bytes] = set()
        for axis in example:
            self._mix(self.points[axis] == 1)
        if "batch" in example:
            self._mix(self.points["batch"] == example["batch"])
        self._seen: set[Any] = set()
        self._index_sites: set[tuple[str, int]] = set()
        # points where every input has a whole size; the others are never run nor decided
        self.valid = _representable(leaves, self.points, self.total)
        if not self.valid.all():
            self.blocked |= ~self.valid
            self.note("an input whose example size is in proportion to the first input's has "
                      "no whole size there")

    # -- the points ------------------------------------------------------------------------

    def example_index(self) -> int | None:
        match = np.ones(self.total, dtype=bool)
        for axis, value in self.example.items():
            match &= self.points[axis] == value
        hits = np.flatnonzero(match)
        return int(hits[0]) if len(hits) else None

    def point(self, at: int) -> dict[str, int]:
        return {axis: int(self.points[axis][at]) for axis in self.points}

    def note(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    # -- a run ----------------------------------------------------------------------------

    def apply(self, run: Any, at: int | None) -> None:
        from archlint.passes.sizes_eval import UnknownFunction

        self.runs.append(run)
        self.runs_made += 1
        sites = getattr(run, "unknown_index_sites", {})
        self._index_sites.update(site for site, symbolic in sites.items() if symbolic)
        if not run.unsupported and not run.symbols and self._index_sites & sites.keys():
            # a literal run cannot tell a size-dependent dim from a fixed one: a symbolic run did
            run.unsupported = ("indexing by values archlint cannot read, along a size-dependent "
                               "dim; meta kernels do not check their bounds")
        index = len(self.runs) - 1
        group = self._group_of(at) if at is not None else None
        if run.unsupported:
            if at is not None and getattr(run, "point_ok", False) and self.state[at] == 0:
                self.state[at] = 1
            if group is not None:
                self.blocked |= group & (self.state == 0)
            where = f" (at {run.error_frame[0]}:{run.error_frame[1]})" if run.error_frame else ""
            self.note(f"{run.unsupported}{where}")
            return
        try:
            region = _region(run, self.points, self.total)
            self._learn(run)
        except UnknownFunction as exc:
            region = np.zeros(self.total, dtype=bool)
            self.note(f"a size expression uses {exc}, which archlint does not evaluate")
        if at is not None:
            region[at] = True  # the run itself is exact at its own point
            sweep = slice(at // self.n * self.n, (at // self.n + 1) * self.n)
            if getattr(run, "pins", None) and region[sweep].sum() == 1:
                self.literal_classes.add(class_key({run.symbols[s]: p
                                                    for s, p in run.pins.items()}))
        region &= (self.state == 0) & self.valid
        self.state[region] = 1 if run.ok else -1
        if not run.ok:
            self.failure[region] = index
        elif run.out_spatial is not None:
            self.spatial_out = True
            np.logical_or(self.same, _same_size(run, self.points, self.spatial, region),
                          out=self.same)
        literal = self.modulus and not set(run.symbols.values()) & set(self.spatial)
        if group is not None and not literal:
            # the run's path covers every point agreeing with it on every guard, its own
            # included; what it leaves of its group is a case the guards cannot tell apart
            left = group & self._group_of(at) & (self.state == 0) & self.valid
            if left.any():
                self.blocked |= left
                self.note("a run's guards do not cover every size that agrees with them")

    def _learn(self, run: Any) -> None:
        """Mix every new guard's truth vector into the signatures."""
        from archlint.passes.sizes_eval import evaluate

        values = _symbol_values(run, self.points)
        # a pinned run's guards say nothing outside its classes; the classes are a guard too
        classes = in_classes(run, self.points, self.total)
        if not classes.all():
            key = ("classes", tuple(sorted(str((run.symbols[s], p)) for s, p in run.pins.items())))
            if key not in self._seen:
                self._seen.add(key)
                self._mix(classes)
        for guard in run.guards:
            key = _canonical(guard.expr, run)
            if key in self._seen:
                continue
            truth = np.broadcast_to(np.asarray(evaluate(guard.expr, values), dtype=bool),
                                    (self.total,)) & classes
            self._seen.add(key)
            self._mix(truth)

    def _mix(self, truth: np.ndarray) -> None:
        # a truth vector mixed twice would cancel itself out (xor): each is mixed once
        key = np.packbits(truth).tobytes()
        if key in self._mixed:
            return
        self._mixed.add(key)
        weight = np.uint64(self._rng.integers(1, 2**63, dtype=np.int64))
        self.signature ^= np.where(truth, weight, np.uint64(0))

    def _group_of(self, at: int) -> np.ndarray:
        return self.signature == self.signature[at]

    # -- the next point ---------------------------------------------------------------------

    def pick(self) -> int | None:
        """A point of the largest group of undecided points that agree on every guard seen:
        the size nearest the example in its sweep."""
        open_ = np.flatnonzero((self.state == 0) & ~self.blocked)
        if not len(open_):
            return None
        if self.modulus:  # a pinned run decides one class of one sweep: the batch first (one
            # run at the example's spatial sizes decides it), then the square sweep, then each
            # axis
            sweep = open_ // self.n
            first = min(set(sweep.tolist()), key=lambda i: (self.sweeps[i] != "batch", i))
            open_ = open_[sweep == first]
        _, inverse, counts = np.unique(self.signature[open_], return_inverse=True,
                                          return_counts=True)
        members = open_[inverse == int(np.argmax(counts))]
        return int(members[np.argmin(self._distance(members))])

    def _distance(self, members: np.ndarray) -> np.ndarray:
        sweep = members // self.n
        names = np.array(self.sweeps)[sweep]
        ref = np.array([self.example.get(s, self.example[self.spatial[0]]) for s in names])
        return np.abs(self.sizes[members % self.n] - ref)

    # -- the answer ---------------------------------------------------------------------------

    def result(self, lo: int, hi: int) -> SymbolicSizes:
        undecided = self.state == 0
        if undecided.any() and not self.reasons:
            self.note("sizes left undecided")
        n, sweeps = self.n, self.sweeps
        split = lambda mask: {s: mask[i * n:(i + 1) * n].copy()  # noqa: E731
                              for i, s in enumerate(sweeps)}
        return SymbolicSizes(
            lo=lo, hi=hi, sweeps=sweeps, ok=split(self.state == 1), undecided=split(undecided),
            same_size=split(self.same) if self.spatial_out else None, reasons=self.reasons,
            failures=split(self.failure), runs=self.runs, example_batch=self.example.get("batch"),
        )


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


def _representable(leaves: Any, points: dict[str, np.ndarray], total: int) -> np.ndarray:
    """Where every input has a whole size (one in proportion n/2 has none at odd n)."""
    ok = np.ones(total, dtype=bool)
    for leaf in leaves or ():
        for axis in leaf.axes:
            if axis is None or axis[0] not in points or axis[1] == 1:
                continue
            scaled = points[axis[0]] * axis[1].numerator
            ok &= (scaled % axis[1].denominator == 0) & (scaled >= axis[1].denominator)
    return ok


def _symbol_values(run: Any, points: dict[str, np.ndarray]) -> dict[Any, np.ndarray]:
    ratios, pins = getattr(run, "ratios", {}), getattr(run, "pins", {})
    values = {}
    for symbol, axis in run.symbols.items():
        ratio = ratios.get(symbol)
        values[symbol] = pins[symbol].q(points[axis]) if symbol in pins else points[axis] \
            if ratio is None else points[axis] * ratio.numerator // ratio.denominator
    return values


def _canonical(expr: Any, run: Any) -> Any:
    """A guard with its run's symbols named after their axes (runs name symbols their own way)."""
    import sympy

    ratios, pins = getattr(run, "ratios", {}), getattr(run, "pins", {})
    names = {s: sympy.Symbol(f"{axis}*{ratios.get(s, 1)}", integer=True)
             for s, axis in run.symbols.items()}
    # a pinned run's guard is read on its classes only: the key names all of them
    classes = tuple(sorted(f"{run.symbols[s]}{p}" for s, p in pins.items()))
    return (expr.xreplace(names), tuple(sorted(run.fixed.items())), classes)


def _region(run: Any, points: dict[str, np.ndarray], total: int) -> np.ndarray:
    """The points that take this run's path: its literal axes equal, its symbols >= 2, and
    every guard true."""
    from archlint.passes.sizes_eval import holds

    region = np.ones(total, dtype=bool)
    for axis, value in run.fixed.items():
        region &= points[axis] == value
    values = _symbol_values(run, points)
    for symbol, axis in run.symbols.items():
        region &= (points[axis] >= 2) if symbol in getattr(run, "pins", {}) else values[symbol] >= 2
    region &= in_classes(run, points, total)
    if not region.any():
        return region
    return region & holds([g.expr for g in run.guards], values, total)


def _same_size(run: Any, points: dict[str, np.ndarray], spatial: list[str],
               region: np.ndarray) -> np.ndarray:
    from archlint.passes.sizes_eval import UnknownFunction, evaluate

    out = run.out_spatial
    if out is None or len(out) != len(spatial):
        return np.zeros(len(region), dtype=bool)
    values = _symbol_values(run, points)
    equal = np.ones(len(region), dtype=bool)
    try:
        for expr, axis in zip(out, spatial):
            equal &= np.asarray(evaluate(expr, values)) == points[axis]
    except UnknownFunction:
        return np.zeros(len(region), dtype=bool)
    return equal & region


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
    sample with an exact formula, none unknown, and no check that only real kernels make (a norm
    over one sample's statistics refuses a single value per channel)."""
    if g.graph.get("graph_module") is None or g.graph.get("reads_sizes", True) or sweep.unknown:
        return False
    if g.graph.get("kernel_checks", True):
        return False
    leaves = getattr(g.graph.get("symbolic_runner"), "leaves", None) or ()
    if any(axis is not None and axis[1] != 1 for leaf in leaves for axis in leaf.axes):
        return False  # the formulas move every input to the same size; this one is in proportion
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
        if op == "norm" and any(f in str(data.get("origin")) for f in _KERNEL_CHECKED_NORMS):
            return False
    return True


#: Functional norms whose real kernels refuse one value per channel (batch_norm on batch
#: statistics, instance and group norm).
_KERNEL_CHECKED_NORMS = ("batch_norm", "instance_norm", "group_norm")


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
