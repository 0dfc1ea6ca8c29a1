"""The forward pass of the input-size sweep: every node's dims over all sizes at once, in
topological order (see :mod:`archlint.passes.sizes` for how it works)."""

from __future__ import annotations

from typing import Any, Callable

import networkx as nx
import numpy as np

from archlint.graph import ELEMENTWISE_MERGES
from archlint.passes.formulas import (
    PASS_THROUGH,
    SPATIAL_OPS,
    UnsupportedOp,
    always_invalid,
    axis_size,
)
from archlint.passes.size_dims import (
    Dims,
    _check_trailing,
    _combine_ok,
    _concat,
    _constant,
    _elementwise,
    _flatten,
    _linear,
    _one_spatial_element,
    _or,
    _permute,
    _reshape,
)
from archlint.passes.size_sweep import SizeSweep, _producers

#: Bytes of retained size arrays beyond which arrays no consumer still needs are dropped.
MEMORY_BUDGET = 32 * 2**20


class _Forward:
    """One topological pass computing every node's dims; see the module docs."""

    def __init__(self, g: nx.DiGraph, sweep: SizeSweep, order: list[str],
                 input_shapes: dict[str, tuple[int, ...] | None],
                 size_from: dict[str, tuple[str, ...]] | None = None) -> None:
        self.g = g
        self.sweep = sweep
        self.order = order
        self.input_shapes = input_shapes
        self.semantics = "onnx" if g.graph.get("frontend") == "onnx" else "torch"
        self.n = len(sweep.sizes)
        self.length = sweep.length
        self.example_pos = self._example_position()
        self._columns: dict[tuple[int, int], np.ndarray] = {}
        self.data = g._node  # the node dicts themselves, without the view's lookups
        #: the producers of the nodes that also read another node's size (any other node's
        #: producers are its inputs)
        self.size_from = size_from if size_from is not None else {
            name: _producers(g, name) for name, data in g._node.items()
            if data["attrs"].size_from is not None}

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
        sweep, extra = self.sweep, self.size_from
        sweep._order = self.order
        sweep._index = None
        sweep._step = self.step
        sweep._producers = extra
        #: consumers each node still has; counted when the budget is first passed (a graph
        #: whose arrays stay under it never needs them)
        refs: dict[str, int] = {}
        values = sweep._values
        retained = 0
        evicting = False
        bad = sweep._bad
        get = values.__getitem__
        nodes = self.data
        # A node's result is a pure function of its op, attrs record, example shape, error
        # flag, origin and its inputs' (dims, ok) pairs: repeated structure (a chain of
        # residual blocks, transformer layers) shares those objects, so the step is looked up
        # instead of recomputed, and a hit shares its pair too, so the nodes after it hit
        # again. Entries hold their key objects (ids stay valid); the memo is small, smaller
        # once arrays are evicted, so it never keeps much memory alive.
        memo: dict[tuple, tuple] = {}
        for pos, name in enumerate(self.order):
            data = nodes[name]
            attrs = data["attrs"]
            origin = data.get("origin")
            if attrs.size_from is None and type(origin) is str and data["op"] != "input":
                shapes = data.get("shapes")
                example = shapes[0] if shapes else None
                ins = [values[p] for p in data["inputs"]]
                key = (data["op"], id(attrs), id(example), data.get("error") is None, origin,
                       *map(id, ins))
                hit = memo.get(key)
                if hit is not None:
                    pair, invalid, reason = hit[1]
                else:
                    dims, ok, invalid, reason = self.step(name, get)
                    pair = ins[0] if ins and ins[0][0] is dims and ins[0][1] is ok else (dims, ok)
                    if len(memo) >= (32 if evicting else 256):
                        memo.clear()
                    memo[key] = ((attrs, example, ins), (pair, invalid, reason))
            else:
                dims, ok, invalid, reason = self.step(name, get)
                pair = (dims, ok)
            if reason is not None:
                sweep.unknown.append((name, reason))
            if invalid is not None:
                sweep._invalid[name] = np.packbits(invalid)
                sweep._failing.append(name)
                bad |= invalid
            srcs = extra[name] if name in extra else data["inputs"]
            if not srcs or values.get(srcs[0]) is not pair:  # a shared pair made no arrays
                retained += self._new_bytes(srcs, pair[0], pair[1], values)
                if not evicting and retained > MEMORY_BUDGET:
                    evicting = True
                    refs = self._consumers_after(pos)
                    for src in srcs:
                        if refs.get(src, 0) == 0:
                            values.pop(src, None)
                    values[name] = pair
                    continue
            values[name] = pair
            if evicting:
                for src in srcs:
                    refs[src] -= 1
                    # past the budget, drop whatever no consumer still needs (an entry that
                    # only shares its producer's arrays goes too, or it would keep them alive)
                    if refs[src] == 0:
                        values.pop(src, None)

    def _consumers_after(self, pos: int) -> dict[str, int]:
        """How many producer slots of the nodes after position ``pos`` each node fills."""
        refs: dict[str, int] = {}
        nodes, extra = self.data, self.size_from
        for name in self.order[pos + 1:]:
            for src in extra[name] if name in extra else nodes[name]["inputs"]:
                refs[src] = refs.get(src, 0) + 1
        return refs

    @staticmethod
    def _new_bytes(srcs: tuple[str, ...], dims: Dims | None, ok: np.ndarray | None,
                   values: dict[str, Any]) -> int:
        """Bytes of the arrays this node created (shared ones belong to their producer)."""
        if dims is None:
            return 0
        first = values.get(srcs[0]) if srcs else None
        if first is not None and first[0] is dims and first[1] is ok:
            return 0
        if first is not None and first[0] is not None and first[1] is ok:
            # a size-keeping op: a new tuple around its input's arrays (no set of ids needed)
            shared = first[0]
            if all(not isinstance(d, np.ndarray) or any(d is a for a in shared) for d in dims):
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
            value = int(d.item(pos)) if isinstance(d, np.ndarray) else int(d)  # no numpy scalar
            if value != e and data["op"] == "concat" and i == _concat_axis(data, len(dims)):
                # an operand outside the graph: a parameter, a buffer, or a tensor built from sizes
                return (f"an operand of this concatenation is not in the graph (a parameter, a "
                        f"buffer or a tensor made from sizes): {value} of {e} on its axis come "
                        "from the graph, so its size is no formula of the input")
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
        if op == "permute":
            return _permute(first, attrs)
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
            if attrs.extra.get("input_stats"):
                invalid = _or(invalid, _one_spatial_element(first))
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
            if len(first) == len(spatial) + 2 and _same_ints(first[:2], head) and all(
                    a is b for a, b in zip(spatial, first[2:])):
                # a size-keeping op (a 3x3 conv, padding 1): its input's dims tuple itself, so
                # the ops after it see the same object (and hit the forward pass's memo)
                return first, invalid, None
        elif op in ("conv", "conv_transpose"):
            head = (first[0], attrs.out_channels)
        elif op in ("pixel_shuffle", "pixel_unshuffle"):
            head = (first[0], None)
        else:
            head = tuple(first[:2])
        return head + tuple(spatial), invalid, None


def _same_ints(a: tuple, b: tuple) -> bool:
    """Equal and all plain ints (np.int64 or arrays are not taken for an int)."""
    return all(type(x) is int and type(y) is int and x == y for x, y in zip(a, b))


def _concat_axis(data: dict, rank: int) -> int:
    axis = data["attrs"].axis
    return (1 if axis is None else axis) % rank
