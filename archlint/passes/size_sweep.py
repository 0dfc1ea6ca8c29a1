"""The facts of the input-size sweep (:class:`SizeSweep`); see :mod:`archlint.passes.sizes`."""

from __future__ import annotations

from typing import Any, Callable

import networkx as nx
import numpy as np

from archlint.passes.progressions import describe_sizes, progressions
from archlint.passes.size_dims import Dims

AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
AXIS_LETTERS = {1: "L", 2: "H = W", 3: "D = H = W"}


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
        #: the forward pass's order; each node's rank in it, built when an evicted value is
        #: recomputed (the only reader)
        self._order: list[str] = []
        self._index: dict[str, int] | None = None
        self._nodes: dict[str, dict] = g._node
        self._values: dict[str, tuple[Dims | None, np.ndarray | None]] = {}
        self._recent: dict[str, tuple[Dims | None, np.ndarray | None]] = {}
        self._invalid: dict[str, np.ndarray] = {}
        self._failing: list[str] = []  # nodes with an invalid size, in topological order
        self._bad: np.ndarray = np.zeros(self.length, dtype=bool)
        self._step: Callable[..., Any] | None = None
        #: the producers of the nodes that also read another node's size (``size_from``);
        #: any other node's producers are its inputs
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
        undecided = sym.undecided["batch"]
        if undecided.any():  # "1..23 only" would claim that the others fail
            return (f"; batch: {self.describe(ok).removesuffix(' only')} runs, "
                    f"{self.describe(undecided).removesuffix(' only')} undecided")
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
            stack.extend(self._producers_of(name))
        temp: dict[str, Any] = {}

        def get(src: str) -> Any:
            return temp[src] if src in temp else self._values[src]

        assert self._step is not None
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self._order)}
        for name in sorted(needed, key=self._index.__getitem__):
            dims, ok, _, _ = self._step(name, get)
            temp[name] = (dims, ok)
        if len(self._recent) > 256:
            self._recent.clear()
        self._recent[node] = temp[node]
        return temp[node]


    def _producers_of(self, name: str) -> tuple[str, ...]:
        found = self._producers.get(name)
        return found if found is not None else self._nodes[name]["inputs"]


def _producers(g: nx.DiGraph, name: str) -> tuple[str, ...]:
    return _node_producers(g._node, g._node[name])


def _node_producers(nodes: dict[str, dict], data: dict) -> tuple[str, ...]:
    """A node's producers, its ``size_from`` reference included (``nodes``: the raw node dicts,
    read once per node without the ``g.nodes`` view)."""
    size_from = data["attrs"].size_from
    inputs = data["inputs"]
    if size_from is None or size_from not in nodes:
        return inputs if type(inputs) is tuple else tuple(inputs)
    return tuple(inputs) + (size_from,)
