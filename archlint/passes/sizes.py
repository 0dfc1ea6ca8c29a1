"""The input-size sweep: every tensor's size as a function of the input size, at all sizes at once.

Public API
----------
``input_size_pass(g, sizes_range=(1, 4096))`` writes:

``g.graph["sizes"]``: a :class:`SizeSweep` (below);
``g.graph["admissible_sizes"]``: JSON, ``{"range": [lo, hi], "square": [...], <axis>: [...]}``
    where each list holds progressions ``{"start": a, "stop": b, "step": k}`` meaning
    ``a, a+k, a+2k, ... < b`` (stop exclusive), or through ``hi`` when ``stop`` is null (the
    pattern holds to the end of the range). Their union is exactly the admissible set within
    the range. ``square`` sweeps every spatial axis of every input together (H = W = n); the
    per-axis keys sweep one axis with the others at the example size: ``height``/``width`` for
    2-d inputs, ``depth``/``height``/``width`` for 3-d, ``length`` for 1-d (the same as
    ``square`` there). None when no input has spatial axes.
``g.graph["sizes_summary"]``: one line, e.g.
    ``"H = W: n >= 32 with n % 32 == 0; smallest 32; example 224 admissible"``.

A size is admissible when every op gets a valid input (no size below 1, no kernel larger than
its padded input, the pool padding rule, a linear layer's in_features equal to the features it
is fed, a fixed reshape whose element count matches, ...) and every merge agrees. A merge that
agrees only because a 1-pixel branch broadcasts does NOT agree (at another size that branch
would not be 1 pixel); a dimension that is 1 at every input size (global or adaptive pooling
to 1, as in squeeze-and-excitation) broadcasts fine.

:class:`SizeSweep`
    ``lo``, ``hi``, ``sizes`` (int64 array), ``sweeps`` (names), ``admissible`` (bool array,
    square sweep), ``admissible_for(sweep)``, ``spatial(node, sweep="square")`` (a tuple of
    int64 arrays, one per spatial axis of the node's output, <= 0 where undefined; None when
    the node has no spatial axes or its size is unknown), ``invalid_at(node, sweep="square")``
    (where that node's own op is invalid or its merge disagrees, given valid inputs),
    ``first_failure(n, sweep="square")`` (the first failing node at size n, or None),
    ``describe(mask)``, ``progressions(mask)``, ``smallest(sweep)``,
    ``nearest(n, sweep) -> (below, above)``, ``complete`` and ``unknown`` (nodes whose size
    function is unknown, with the reason; past them sizes are not checked, so "admissible"
    only means nothing known fails).

How it works: one forward pass in topological order over every node's full shape, where each
dimension is an int (the same at every input size: batch, channels, a pooled 1) or an int64
array over all swept sizes (all sweeps side by side in one array). Formulas are those of
:mod:`archlint.passes.formulas`. Per node it keeps the mask of sizes at which the node's output
exists; an op is judged only where its inputs exist, so the first failure is the cause. Ops
that keep sizes share their input's arrays, so a chain of 30k such nodes costs nothing; once
the retained arrays pass a memory budget, arrays no consumer still needs are dropped, and
``spatial()`` recomputes them on demand from the nearest kept ancestors. Invalid masks are
kept bit-packed and only where some size fails. At the example size the sweep is checked
against the frontend's exact shapes; a node whose formula disagrees becomes unknown, not a
guess.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import networkx as nx
import numpy as np

from archlint.graph import ELEMENTWISE_MERGES
from archlint.passes.progressions import describe_sizes, expand_progressions, progressions
from archlint.passes.formulas import (
    PASS_THROUGH,
    SPATIAL_OPS,
    UnsupportedOp,
    always_invalid,
    axis_size,
)

__all__ = [
    "SizeSweep",
    "input_size_pass",
    "progressions",
    "expand_progressions",
    "describe_sizes",
]

#: Bytes of retained size arrays beyond which arrays no consumer still needs are dropped.
MEMORY_BUDGET = 32 * 2**20

AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
AXIS_LETTERS = {1: "L", 2: "H = W", 3: "D = H = W"}

Dims = tuple  # per full axis: int | np.ndarray | None


# -- the sweep object ----------------------------------------------------------------------------


class SizeSweep:
    """The facts of the sweep; see the module docs."""

    def __init__(self, g: nx.DiGraph, lo: int, hi: int, axes: int) -> None:
        self.lo, self.hi = int(lo), int(hi)
        self.sizes = np.arange(self.lo, self.hi + 1, dtype=np.int64)
        self.axes = axes
        self.axis_names = AXIS_NAMES.get(axes, tuple(f"axis{i}" for i in range(axes)))
        self.sweeps = ("square",) + (self.axis_names if axes >= 2 else ())
        self.unknown: list[tuple[str, str]] = []
        self.example: tuple[int, ...] | None = None
        self._index: dict[str, int] = {}
        self._values: dict[str, tuple[Dims | None, np.ndarray | None]] = {}
        self._recent: dict[str, tuple[Dims | None, np.ndarray | None]] = {}
        self._invalid: dict[str, np.ndarray] = {}
        self._failing: list[str] = []  # nodes with an invalid size, in topological order
        self._bad: np.ndarray = np.zeros(self.length, dtype=bool)
        self._step: Callable[..., Any] | None = None
        self._producers: dict[str, tuple[str, ...]] = {}
        self._undecided: np.ndarray = np.zeros(self.length, dtype=bool)
        self.symbolic: Any = None  # the SymbolicSizes adopted (torch), else None

    @property
    def length(self) -> int:
        return len(self.sizes) * len(self.sweeps)

    def _sweep_slice(self, sweep: str) -> slice:
        if sweep == "length" and self.axes == 1:
            sweep = "square"
        if sweep not in self.sweeps:
            raise KeyError(f"no sweep {sweep!r}; this model has {', '.join(self.sweeps)}")
        i = self.sweeps.index(sweep)
        n = len(self.sizes)
        return slice(i * n, (i + 1) * n)

    # -- queries ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True when every size in the range is decided: admissible means the model runs,
        and any other size is known to fail."""
        return not self._undecided.any()

    @property
    def exact(self) -> bool:
        return self.complete

    def undecided_for(self, sweep: str) -> np.ndarray:
        return self._undecided[self._sweep_slice(sweep)].copy()

    def adopt(self, result: Any) -> None:
        """Take the admissible and undecided sizes of the symbolic engine: one answer for the
        JSON, the text and the rules (admissible = PyTorch runs)."""
        self.symbolic = result
        for sweep in self.sweeps:
            part = self._sweep_slice(sweep)
            self._bad[part] = ~result.ok[sweep]
            self._undecided[part] = result.undecided[sweep]

    def mark_unknown_undecided(self) -> None:
        """Formulas alone past an op they cannot model: what they do not reject is undecided."""
        if self.unknown:
            self._undecided = ~self._bad
            self._bad = np.ones(self.length, dtype=bool)

    @property
    def admissible(self) -> np.ndarray:
        return self.admissible_for("square")

    def admissible_for(self, sweep: str) -> np.ndarray:
        return ~self._bad[self._sweep_slice(sweep)]

    def spatial(self, node: str, sweep: str = "square") -> tuple[np.ndarray, ...] | None:
        dims, ok = self._value(node)
        if dims is None or len(dims) < 3 or any(d is None for d in dims[2:]):
            return None
        part = self._sweep_slice(sweep)
        out = []
        for d in dims[2:]:
            arr = d[part] if isinstance(d, np.ndarray) else np.full(len(self.sizes), d, np.int64)
            if ok is not None:
                arr = np.where(ok[part], arr, 0)
            out.append(np.asarray(arr, dtype=np.int64))
        return tuple(out)

    def invalid_at(self, node: str, sweep: str = "square") -> np.ndarray:
        packed = self._invalid.get(node)
        if packed is None:
            return np.zeros(len(self.sizes), dtype=bool)
        return np.unpackbits(packed, count=self.length).astype(bool)[self._sweep_slice(sweep)]

    def first_failure(self, n: int, sweep: str = "square") -> str | None:
        if not self.lo <= n <= self.hi:
            return None
        pos = self._sweep_slice(sweep).start + (n - self.lo)
        for node in self._failing:
            if self._invalid[node][pos >> 3] & (0x80 >> (pos & 7)):
                return node
        return None

    def progressions(self, mask: np.ndarray) -> list[dict[str, int | None]]:
        return progressions(mask, self.lo)

    def describe(self, mask: np.ndarray) -> str:
        return describe_sizes(mask, self.lo, self.hi)

    def smallest(self, sweep: str = "square") -> int | None:
        hits = np.flatnonzero(self.admissible_for(sweep))
        return int(self.sizes[hits[0]]) if len(hits) else None

    def nearest(self, n: int, sweep: str = "square") -> tuple[int | None, int | None]:
        """The admissible sizes closest to n from below and from above (n itself counts)."""
        values = self.sizes[self.admissible_for(sweep)]
        below = values[values <= n]
        above = values[values >= n]
        return (int(below[-1]) if len(below) else None, int(above[0]) if len(above) else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"range": [self.lo, self.hi]}
        undecided: dict[str, Any] = {}
        names = ("square",) + (("length",) if self.axes == 1 else self.axis_names)
        for name in names:
            out[name] = progressions(self.admissible_for(name), self.lo)
            undecided[name] = progressions(self.undecided_for(name), self.lo)
        if self.axes == 3:
            out["cube"], undecided["cube"] = out["square"], undecided["square"]
        sym = self.symbolic
        if sym is not None and "batch" in sym.sweeps:
            out["batch"] = progressions(sym.ok["batch"], self.lo)
            undecided["batch"] = progressions(sym.undecided["batch"], self.lo)
        out["undecided"] = undecided
        out["exact"] = self.exact and (sym is None or sym.exact)
        if sym is not None and sym.same_size is not None:
            out["same_size"] = progressions(sym.same_size["square"] & self.admissible, self.lo)
        return out

    def summary(self) -> str:
        letters = AXIS_LETTERS.get(self.axes, "n")
        mask = self.admissible
        text = f"{letters}: {self.describe(mask)}"
        if not mask.any():
            text += f" in {self.lo}..{self.hi}"
        smallest = self.smallest()
        if smallest is not None:
            text += f"; smallest {smallest}"
        text += self._example_note()
        text += self._batch_note()
        text += self._same_size_note()
        if self.exact and (self.symbolic is None or self.symbolic.exact):
            return text + " (exact)"
        undecided = self._undecided[self._sweep_slice("square")]
        if undecided.any():
            text += f"; undecided: {letters} in {self.describe(undecided)}"
        elif not self.exact:
            text += "; some per-axis sizes undecided"
        reason = self._undecided_reason()
        return text + (f" ({reason})" if reason else "")

    def _undecided_reason(self) -> str | None:
        if self.symbolic is not None and self.symbolic.reasons:
            return self.symbolic.reasons[0]
        if self.unknown:
            node, reason = self.unknown[0]
            more = f" (and {len(self.unknown) - 1} more)" if len(self.unknown) > 1 else ""
            return f"sizes past {node} are unknown: {reason}{more}"
        return None

    def _batch_note(self) -> str:
        sym = self.symbolic
        if sym is None or "batch" not in sym.sweeps:
            return ""
        ok = sym.ok["batch"]
        if ok.all():
            return f"; batch: all n >= {self.lo}"
        return f"; batch: {self.describe(ok)}"

    def _same_size_note(self) -> str:
        sym = self.symbolic
        if sym is None or sym.same_size is None:
            return ""
        ok = self.admissible
        same = sym.same_size["square"] & ok
        if not ok.any() or (same == ok).all():
            return "; output keeps the input size" if ok.any() and same.any() else ""
        if not same.any():
            return "; output size differs from the input"
        return f"; output keeps the input size at {self.describe(same)}"

    def _example_note(self) -> str:
        ex = self.example
        if not ex or any(not self.lo <= v <= self.hi for v in ex):
            return ""
        shown = "x".join(map(str, ex))
        sweep = "square" if self.axes == 1 else self.axis_names[0]
        n = ex[0]
        if self.admissible_for(sweep)[n - self.lo]:
            return f"; example {shown} admissible"
        if self.undecided_for(sweep)[n - self.lo]:
            return f"; example {shown} undecided"
        where = self.first_failure(n, sweep)
        run = self.symbolic.failure_at(sweep, n) if self.symbolic is not None else None
        if where is None and run is not None and run.error_frame is not None:
            where = f"{run.error_frame[0]}:{run.error_frame[1]}"
        return f"; example {shown} fails" + (f" at {where}" if where else "")

    # -- lazy values -------------------------------------------------------------------------

    def _value(self, node: str) -> tuple[Dims | None, np.ndarray | None]:
        if node in self._values:
            return self._values[node]
        if node in self._recent:
            return self._recent[node]
        # recompute the evicted ancestors, in topological order
        needed, stack = set(), [node]
        while stack:
            name = stack.pop()
            if name in needed or name in self._values:
                continue
            needed.add(name)
            stack.extend(self._producers[name])
        temp: dict[str, Any] = {}

        def get(src: str) -> Any:
            return temp[src] if src in temp else self._values[src]

        assert self._step is not None
        for name in sorted(needed, key=self._index.__getitem__):
            dims, ok, _, _ = self._step(name, get)
            temp[name] = (dims, ok)
        if len(self._recent) > 256:
            self._recent.clear()
        self._recent[node] = temp[node]
        return temp[node]


def _producers(g: nx.DiGraph, name: str) -> tuple[str, ...]:
    data = g.nodes[name]
    size_from = data["attrs"].size_from
    return tuple(data["inputs"]) + ((size_from,) if size_from is not None and size_from in g else ())


# -- the pass -------------------------------------------------------------------------------------


def input_size_pass(g: nx.DiGraph, sizes_range: tuple[int, int] = (1, 4096)) -> SizeSweep | None:
    """Run the sweep and write ``sizes``, ``admissible_sizes`` and ``sizes_summary``."""
    lo, hi = int(sizes_range[0]), int(sizes_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"sizes range {sizes_range}: need 1 <= lo <= hi")
    order = _topological(g)
    inputs = [n for n in order if g.nodes[n]["op"] == "input"]
    input_shapes = _input_shapes(g, inputs)
    axes = max((len(s) - 2 for s in input_shapes.values() if s is not None), default=0)
    if axes <= 0:
        g.graph["sizes"] = None
        g.graph["admissible_sizes"] = None
        g.graph["sizes_summary"] = None
        return None
    sweep = SizeSweep(g, lo, hi, axes)
    _Forward(g, sweep, order, input_shapes).run()
    from archlint.passes.symbolic_sizes import formula_is_exact, from_formulas, symbolic_size_pass

    if g.graph.get("symbolic_runner") is not None and formula_is_exact(g, sweep):
        sweep.adopt(from_formulas(g, sweep))  # a graph that reads no sizes: formulas are exact
    elif g.graph.get("symbolic_runner") is not None:
        result = symbolic_size_pass(g, lo, hi)
        if result is not None:
            g.graph["symbolic_sizes"] = result
            sweep.adopt(result)
    else:
        sweep.mark_unknown_undecided()
    g.graph["sizes"] = sweep
    g.graph["admissible_sizes"] = sweep.to_json()
    g.graph["sizes_summary"] = sweep.summary()
    return sweep


def _input_shapes(g: nx.DiGraph, inputs: list[str]) -> dict[str, tuple[int, ...] | None]:
    declared = list(g.graph.get("input_shapes") or [])
    out = {}
    for i, name in enumerate(inputs):
        shapes = g.nodes[name].get("shapes")
        shape = shapes[0] if shapes else (tuple(declared[i]) if i < len(declared) else None)
        out[name] = None if shape is None else tuple(int(v) for v in shape)
    return out


def _topological(g: nx.DiGraph) -> list[str]:
    seen: set[str] = set()
    order = list(g.nodes)
    for name in order:
        for src in _producers(g, name):
            if src not in seen:
                from archlint.graph import ops

                return list(ops(g))
        seen.add(name)
    return order


class _Forward:
    """One topological pass computing every node's dims; see the module docs."""

    def __init__(self, g: nx.DiGraph, sweep: SizeSweep, order: list[str],
                 input_shapes: dict[str, tuple[int, ...] | None]) -> None:
        self.g = g
        self.sweep = sweep
        self.order = order
        self.input_shapes = input_shapes
        self.semantics = "onnx" if g.graph.get("frontend") == "onnx" else "torch"
        self.n = len(sweep.sizes)
        self.length = sweep.length
        self.example_pos = self._example_position()
        self._columns: dict[tuple[int, int], np.ndarray] = {}
        self.data = {name: g.nodes[name] for name in order}
        self.producers = {name: _producers(g, name) for name in order}

    def _example_position(self) -> int | None:
        spatial = {s[2:] for s in self.input_shapes.values() if s is not None and len(s) > 2}
        if len(spatial) != 1:
            return None
        ex = next(iter(spatial))
        self.sweep.example = ex
        if len(ex) != self.sweep.axes or not self.sweep.lo <= ex[0] <= self.sweep.hi:
            return None
        # the first per-axis sweep at n = example[0] has every axis at its example size
        sweep = 0 if self.sweep.axes == 1 else 1
        return sweep * self.n + ex[0] - self.sweep.lo

    def _column(self, axis: int, example: int) -> np.ndarray:
        key = (axis, example)
        col = self._columns.get(key)
        if col is None:
            parts = [self.sweep.sizes]
            for a in range(len(self.sweep.sweeps) - 1):
                parts.append(self.sweep.sizes if a == axis else np.full(self.n, example, np.int64))
            col = np.concatenate(parts)
            self._columns[key] = col
        return col

    # -- driver ---------------------------------------------------------------------------------

    def run(self) -> None:
        sweep, producers = self.sweep, self.producers
        sweep._index = {name: i for i, name in enumerate(self.order)}
        sweep._step = self.step
        sweep._producers = producers
        refs: dict[str, int] = {}
        for name in self.order:
            for src in producers[name]:
                refs[src] = refs.get(src, 0) + 1
        values = sweep._values
        retained = 0
        evicting = False
        bad = sweep._bad
        get = values.__getitem__
        for name in self.order:
            dims, ok, invalid, reason = self.step(name, get)
            if reason is not None:
                sweep.unknown.append((name, reason))
            if invalid is not None:
                sweep._invalid[name] = np.packbits(invalid)
                sweep._failing.append(name)
                bad |= invalid
            srcs = producers[name]
            cost = self._new_bytes(srcs, dims, ok, values)
            values[name] = (dims, ok)
            retained += cost
            evicting = evicting or retained > MEMORY_BUDGET
            for src in srcs:
                refs[src] -= 1
                # past the budget, drop whatever no consumer still needs (an entry that only
                # shares its producer's arrays goes too, or it would keep them alive)
                if evicting and refs[src] == 0:
                    values.pop(src, None)

    @staticmethod
    def _new_bytes(srcs: tuple[str, ...], dims: Dims | None, ok: np.ndarray | None,
                   values: dict[str, Any]) -> int:
        """Bytes of the arrays this node created (shared ones belong to their producer)."""
        if dims is None:
            return 0
        first = values.get(srcs[0]) if srcs else None
        if first is not None and first[0] is dims and first[1] is ok:
            return 0
        inherited = set()
        for src in srcs:
            value = values.get(src)
            if value is not None and value[0] is not None:
                inherited.update(id(d) for d in value[0] if isinstance(d, np.ndarray))
                inherited.add(id(value[1]))
        total = sum(d.nbytes for d in dims if isinstance(d, np.ndarray) and id(d) not in inherited)
        if ok is not None and id(ok) not in inherited:
            total += ok.nbytes
        return total

    # -- one node ---------------------------------------------------------------------------------

    def step(self, name: str, get: Callable[[str], Any]) -> tuple[Any, Any, Any, str | None]:
        """(dims, ok, own invalid mask or None, unknown reason or None) of one node."""
        data = self.data[name]
        op = data["op"]
        if op == "input":
            return self._input(name) + (None, None)
        producers = data["inputs"]
        if not producers:
            return None, None, None, f"{op} node without inputs"
        values = [get(p) for p in producers]
        ok = _combine_ok([v[1] for v in values])
        try:
            dims, invalid, reason = self._dims(name, data, op, [v[0] for v in values], get)
        except UnsupportedOp as exc:
            dims, invalid, reason = None, False, str(exc)
        if dims is not None and reason is None:
            mismatch = self._check_example(data, dims, ok, invalid)
            if mismatch:
                dims, reason = None, mismatch
        own = None
        if invalid is not False and invalid is not None:
            own = np.broadcast_to(np.asarray(invalid, dtype=bool), (self.length,))
            if ok is not None:
                own = own & ok
            if own.any():
                own = np.array(own, dtype=bool)
                ok = ~own if ok is None else ok & ~own
            else:
                own = None
        return dims, ok, own, reason

    def _input(self, name: str) -> tuple[Dims | None, None]:
        shape = self.input_shapes.get(name)
        if shape is None:
            return None, None
        spatial = shape[2:]
        if not spatial:
            return shape, None
        # right-align a lower-rank input with the swept axes
        offset = self.sweep.axes - len(spatial)
        cols = tuple(self._column(offset + i, v) for i, v in enumerate(spatial))
        return tuple(shape[:2]) + cols, None

    def _check_example(self, data: dict, dims: Dims, ok: np.ndarray | None, invalid: Any) -> str | None:
        pos = self.example_pos
        shapes = data.get("shapes")
        if pos is None or not shapes or shapes[0] is None:
            return None
        if ok is not None and not ok[pos]:
            return None  # an upstream op fails at the example; the frontend's shape is moot
        inv = invalid[pos] if isinstance(invalid, np.ndarray) else bool(invalid)
        if inv and data["op"] not in ELEMENTWISE_MERGES:  # the engine broadcasts 1 pixel; we do not
            if data.get("error") is None:
                return "the size formulas say this op fails at the example size, the exact engine does not"
            return None
        example = shapes[0]
        if len(dims) != len(example):
            return f"rank {len(dims)} from the formulas, {len(example)} traced"
        for i, (d, e) in enumerate(zip(dims, example)):
            if d is None:
                continue
            value = int(d[pos]) if isinstance(d, np.ndarray) else int(d)
            if value != e:
                return f"the size formula gives {value} on axis {i} at the example, the traced shape {e}"
        return None

    def _dims(self, name: str, data: dict, op: str, ins: list[Dims | None],
              get: Callable[[str], Any]) -> tuple[Dims | None, Any, str | None]:
        attrs = data["attrs"]
        first = ins[0]
        example = data["shapes"][0] if data.get("shapes") else None
        if op in PASS_THROUGH:
            return self._pass_through(data, op, attrs, first, example)
        if op in ELEMENTWISE_MERGES:
            return _elementwise(ins)
        if op == "concat":
            return _concat(ins, attrs.axis)
        if first is None:
            return None, False, None  # unknown upstream: already reported there
        if op in SPATIAL_OPS:
            return self._spatial_op(data, op, attrs, first, example, get)
        if op == "flatten":
            return _flatten(first, attrs)
        if op == "linear":
            return _linear(first, attrs, example)
        if op == "reshape":
            return _reshape(first, attrs, example)
        # unknown: only an input that is the same at every size gives a known output
        if first is not None and all(_constant(d) for d in ins) and example is not None:
            return tuple(example), False, None
        return None, False, f"{data.get('origin') or op} has no size formula"

    def _pass_through(self, data, op, attrs, first, example):
        if first is None:
            return None, False, None
        invalid: Any = False
        if op == "norm":
            normalized = attrs.extra.get("normalized_shape")
            if normalized:
                invalid = _check_trailing(first, tuple(normalized))
        if example is None or len(example) != len(first):
            return first, invalid, None
        # a constant batch/channel dim as the exact engine says (an op the frontend calls
        # pointwise may still change channels); size-dependent dims come through unchanged
        head = tuple(e if d is None or not isinstance(d, np.ndarray) else d
                     for d, e in zip(first[:2], example[:2]))
        if all(d is h for d, h in zip(first[:2], head)) or tuple(first[:2]) == head:
            return first, invalid, None
        return head + tuple(first[2:]), invalid, None

    def _spatial_op(self, data, op, attrs, first, example, get):
        if first is None:
            return None, False, None
        if len(first) < 3:
            raise UnsupportedOp(f"{op} on a tensor without spatial axes")
        reason = always_invalid(op, attrs, self.semantics)
        if reason:  # fails at every size; the formulas may not even be defined
            return tuple(example) if example is not None else first, True, None
        invalid: Any = False
        ref = None
        if op in ("upsample", "conv_transpose") and attrs.size_from is not None:
            ref_dims = get(attrs.size_from)[0] if attrs.size_from in self.g else None
            if ref_dims is None or len(ref_dims) < 3:
                raise UnsupportedOp(f"{op} to the size of {attrs.size_from!r}, which is unknown")
            ref = ref_dims[2:]
        spatial = []
        for axis, n in enumerate(first[2:]):
            if n is None:
                spatial.append(None)
                continue
            r = None
            if ref is not None:
                r = ref[axis] if axis < len(ref) else None
                if r is None:
                    spatial.append(None)
                    continue
            out, bad = axis_size(op, attrs, axis, n, ref=r, semantics=self.semantics)
            spatial.append(out)
            invalid = _or(invalid, bad)
        if example is not None and len(example) == 2 and op in ("global_pool", "adaptive_pool"):
            return tuple(example), invalid, None  # keepdim=False: (N, C)
        if example is not None and len(example) >= 2:
            head = tuple(example[:2])
        elif op in ("conv", "conv_transpose"):
            head = (first[0], attrs.out_channels)
        elif op in ("pixel_shuffle", "pixel_unshuffle"):
            head = (first[0], None)
        else:
            head = tuple(first[:2])
        return head + tuple(spatial), invalid, None


# -- per-op dims (module functions: no state) ------------------------------------------------


def _constant(dims: Dims | None) -> bool:
    return dims is not None and all(d is not None and not isinstance(d, np.ndarray) for d in dims)


def _or(a: Any, b: Any) -> Any:
    if a is False:
        return b
    if b is False:
        return a
    return a | b


def _combine_ok(oks: list[np.ndarray | None]) -> np.ndarray | None:
    result = None
    for ok in oks:
        if ok is None or ok is result:
            continue
        result = ok if result is None else result & ok
    return result


def _differs(a: Any, b: Any) -> Any:
    """Where two dims disagree (False when equal everywhere)."""
    if a is b:
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a != b
    return a != b


def _elementwise(ins: list[Dims | None]) -> tuple[Dims | None, Any, str | None]:
    if any(d is None for d in ins):
        return None, False, None
    rank = max(len(d) for d in ins)
    out: list[Any] = []
    invalid: Any = False
    for pos in range(rank):
        values = [d[pos - rank + len(d)] for d in ins if pos >= rank - len(d)]
        if any(v is None for v in values):
            out.append(None)
            continue
        arrays = [v for v in values if isinstance(v, np.ndarray)]
        big = {int(v) for v in values if not isinstance(v, np.ndarray) and v != 1}
        if len(big) > 1:
            invalid = True
        if arrays:
            ref = arrays[0]
            for a in arrays[1:]:
                invalid = _or(invalid, _differs(a, ref))
            for c in big:
                invalid = _or(invalid, ref != c)  # a 1-pixel array does not broadcast
            # the size torch gives (a broadcast 1 takes the other's); where they disagree
            # otherwise the node is invalid and the value unused
            out.append(np.maximum.reduce([*arrays, *(np.full_like(ref, c) for c in big)]))
        else:
            out.append(big.pop() if big else 1)
    return tuple(out), invalid, None


def _concat(ins: list[Dims | None], axis: int | None) -> tuple[Dims | None, Any, str | None]:
    if any(d is None for d in ins):
        return None, False, None
    rank = len(ins[0])
    if any(len(d) != rank for d in ins):
        return None, True, None
    axis = 1 if axis is None else axis % rank
    out: list[Any] = []
    invalid: Any = False
    for pos in range(rank):
        values = [d[pos] for d in ins]
        if any(v is None for v in values):
            out.append(None)
            continue
        if pos == axis:
            total = values[0]
            for v in values[1:]:
                total = total + v
            out.append(total)
            continue
        for v in values[1:]:
            invalid = _or(invalid, _differs(v, values[0]))
        out.append(values[0])
    return tuple(out), invalid, None


def _product(dims: Iterable[Any]) -> Any:
    total: Any = 1
    for d in dims:
        if d is None:
            return None
        total = total * d
    return total


def _flatten(first: Dims, attrs) -> tuple[Dims | None, Any, str | None]:
    rank = len(first)
    start = (1 if attrs.axis is None else attrs.axis) % rank
    end = (-1 if attrs.end_axis is None else attrs.end_axis) % rank
    if end < start:
        return first, False, None
    merged = _product(first[start: end + 1])
    return tuple(first[:start]) + (merged,) + tuple(first[end + 1:]), False, None


def _linear(first: Dims, attrs, example) -> tuple[Dims | None, Any, str | None]:
    last = first[-1]
    invalid: Any = False
    if attrs.in_features is not None and last is None:
        return tuple(first[:-1]) + (attrs.out_features,), False, (
            "the features fed to this linear layer are unknown (channel count missing)"
        )
    if attrs.in_features is not None:
        invalid = _differs(last, attrs.in_features)
    out_features = attrs.out_features
    if out_features is None and example is not None:
        out_features = example[-1]
    return tuple(first[:-1]) + (out_features,), invalid, None


def _reshape(first: Dims, attrs, example) -> tuple[Dims | None, Any, str | None]:
    if _constant(first) and example is not None:
        return tuple(example), False, None
    target = attrs.target_shape
    if target is None:
        raise UnsupportedOp("reshape to a shape computed at run time")
    total = _product(first)
    if total is None:
        return None, False, None
    out: list[Any] = []
    infer = None
    for pos, t in enumerate(target):
        if t is None:
            # an entry read off a tensor's size (x.size(0)) or ONNX's 0: the input dim at the
            # same position, when the example agrees
            if pos >= len(first) or first[pos] is None or example is None or pos >= len(example):
                raise UnsupportedOp("reshape with a run-time entry that is not an input dim")
            at_example = first[pos] if not isinstance(first[pos], np.ndarray) else None
            if at_example is not None and at_example != example[pos]:
                raise UnsupportedOp("reshape with a run-time entry that is not an input dim")
            out.append(first[pos])
        elif t == -1:
            infer = pos
            out.append(None)
        else:
            out.append(int(t))
    known = _product(v for i, v in enumerate(out) if i != infer)
    if infer is None:
        return tuple(out), _differs(known, total), None
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.maximum(known, 1) if isinstance(known, np.ndarray) else max(known, 1)
        out[infer] = total // safe
        invalid = _or(_differs(total % safe, 0), _differs(known, safe))
    return tuple(out), invalid, None


def _check_trailing(first: Dims, normalized: tuple[int, ...]) -> Any:
    if len(normalized) > len(first):
        return True
    invalid: Any = False
    for d, want in zip(first[len(first) - len(normalized):], normalized):
        if d is not None:
            invalid = _or(invalid, _differs(d, int(want)))
    return invalid
