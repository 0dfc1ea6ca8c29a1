"""Axis provenance: for every tensor dimension, which input spatial positions it indexes, and how.

Public API
----------
``provenance_pass(g)`` writes ``g.nodes[n]["provenance"]`` on every node: a tuple with one
:class:`Dim` per dimension of the node's first output, or ``None`` when unknown (no shapes, or
an op this pass does not model). It is pure: it reads ``op``, ``attrs``, ``inputs`` and
``shapes`` only.

The model
---------
A *map* is a grid of spatial positions: the model input, and the output of every op that makes
a new grid (a conv, a pool, a resize...). A map has one *extent* per input spatial axis.

A dimension indexes positions as a mixed-radix number (most significant digit first): each
:class:`Digit` says "one step of me moves ``step`` positions along axis ``axis`` of map
``map``", or, with ``axis`` None, that it is no position at all (batch, channels, heads).

* A token axis of a 14x14 map is ``H(14, step 14) W(14, step 1)``.
* A window partition of a 56-wide axis by 7 splits it into ``H(8, step 7)`` (the window
  index, which grows with the input) and ``H(7, step 1)`` (the offset inside the window, which
  does not).
* ``Dim.prefix`` counts entries before the digits that are no position (a class token).

``Digit.grows`` is True for the most significant digit of a map whose size follows the input
size: that is the digit whose count changes when the input does. A layer whose weight spans a
growing digit (a Linear over tokens), or a constant that must match it (a learned position
embedding), fixes the input resolution.

Ops (torch and ONNX map to the same kinds): view/reshape/flatten/unflatten/squeeze (digits are
regrouped, splitting a digit where a size divides it), permute/transpose/movedim, expand, concat
(a dim that joins a position-free piece, such as a class token, keeps its digits and counts the
piece in ``prefix``), index/select/slice of prefix entries, a constant index whose values are
known (:mod:`archlint.passes.provenance_picks`), split/chunk/unbind, matmul, einsum,
attention, softmax, reduce, linear (its last dim becomes features), roll, and the ops on
``N, C, *spatial`` maps (conv, pools, resize, pad, slice, pixel (un)shuffle), which make a new map
when their spatial dims are plain single digits; F.unfold / F.fold (and nn.Unfold / nn.Fold)
through a virtual map of (block, offset) positions (:mod:`archlint.passes.provenance_blocks`).
Anything else: unknown.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from archlint.graph import ELEMENTWISE_MERGES, ops
from archlint.passes.provenance_blocks import blocks_dims, fold_dims, unfold_dims
from archlint.passes.provenance_picks import pick_dim
from archlint.passes.provenance_contractions import (  # noqa: F401  (re-exported)
    _einsum,
    _matmul,
    contracted,
    parse_einsum,
)
from archlint.passes.provenance_maps import (  # noqa: F401  (some re-exported)
    _fitted,
    _map_op,
    _map_op_memo,
    _step_map_fallback,
    layout_slices,
    strided_map,
)
from archlint.passes.provenance_dims import (  # noqa: F401  (re-exported)
    Digit,
    Dim,
    _broadcast,
    _left_pad,
    _plain,
    _shape,
    carried_axes,
    describe,
    grows,
    new_digit,
    new_map_dim,
    plain_map,
)

__all__ = ["Digit", "Dim", "provenance_pass", "carried_axes", "grows", "plain_map"]

#: ops on an ``N, C, *spatial`` tensor that make a new map of spatial positions.
MAP_OPS = frozenset({
    "conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_pool", "upsample",
    "pad", "slice", "pixel_shuffle", "pixel_unshuffle",
})
SAME_LAYOUT = frozenset({"pointwise", "norm", "output", "softmax", "roll"})


def provenance_pass(g: nx.DiGraph) -> None:
    """Write ``provenance`` on every node (see the module docs)."""
    facts: dict[str, tuple[Dim, ...] | None] = {}
    #: the shape each fact was fitted to (an op that hands its input's fitted dims on to the
    #: same shape needs no refit)
    shape_of: dict[str, tuple[int, ...] | None] = {}
    from_input: set[str] = set()
    templates: dict[tuple, Any] = {}
    nodes = g._node  # the node dicts themselves (written below), without the view's lookups
    for name in ops(g):
        data = nodes[name]
        shapes = data.get("shapes")  # _shape, read from the node dict at hand
        shape = shapes[0] if shapes and shapes[0] is not None else None
        if shape is not None and type(shape) is not tuple:
            shape = tuple(shape)
        shape_of[name] = shape
        op = data["op"]
        inputs = data["inputs"]
        if op == "input" or not from_input.isdisjoint(inputs):
            from_input.add(name)
        try:
            if shape is None:
                dims = None
            elif name not in from_input:  # computed from weights/buffers only: no positions
                dims = tuple(_plain(s) for s in shape)
            elif op in SAME_LAYOUT and inputs:
                dims = facts[inputs[0]]  # the general path's answer, when already fitted:
                if dims is None or shape_of[inputs[0]] == shape:
                    facts[name] = data["provenance"] = dims
                    continue
                dims = dims if len(dims) == len(shape) else None
            elif op in ELEMENTWISE_MERGES and len(inputs) == 2:  # a residual add: _step's path
                a, b = facts[inputs[0]], facts[inputs[1]]
                dims = None if a is None or b is None else _broadcast([a, b], shape)
            elif op in MAP_OPS and inputs and facts[inputs[0]] is not None:
                dims, fits = _map_op_memo(templates, name, op, data["attrs"], facts[inputs[0]],
                                          shape)
                if fits:  # the template's dims fit this shape (checked once, when made)
                    facts[name] = data["provenance"] = dims
                    continue
            else:
                dims = _step(g, name, data, shape, facts)
        except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError):
            dims = None  # attrs this pass cannot read: unknown, never a guess
        if dims is not None and inputs and dims is facts.get(inputs[0]) \
                and shape_of[inputs[0]] == shape:
            facts[name] = data["provenance"] = dims  # fitted to this shape already
        else:
            facts[name] = data["provenance"] = _fitted(dims, shape)


def _step(g, name, data, shape, facts) -> tuple[Dim, ...] | None:
    op = data["op"]
    inputs = data["inputs"]
    ins = [facts.get(i) for i in inputs]
    first = ins[0] if ins else None
    attrs = data["attrs"]
    if op == "input":
        return _input_dims(name, shape)
    if not inputs:
        return tuple(_plain(s) for s in shape)
    if op in SAME_LAYOUT:
        return first if first is not None and len(first) == len(shape) else None
    if op == "concat":
        rolled = roll_of_concat(g, name)
        if rolled is not None:
            return facts.get(rolled[0])
    if first is None:
        return None
    if op in MAP_OPS or op == "global_pool":
        return _step_map_fallback(name, op, attrs, first, shape,
                                  _map_op(name, op, attrs, first, shape))
    if op in ELEMENTWISE_MERGES:
        return _broadcast([i for i in ins], shape)
    if op == "concat":
        dims = _concat(ins, attrs.axis, shape)
        if dims is None and len(ins) == 1 and ins[0] is not None:  # torch.cat([cls, x], 1)
            return _with_constant_prefix(ins[0], attrs, shape)
        return dims
    if op == "reshape" and attrs.extra.get("perm") is not None:  # ONNX channel-shuffle Transpose
        return tuple(first[p] for p in attrs.extra["perm"])
    if op in ("flatten", "reshape"):
        return _regroup(first, shape)
    if op == "permute":
        perm = attrs.extra["perm"]
        return tuple(first[p] for p in perm)
    if op == "expand":
        return tuple(d if d.size == s else _plain(s)
                     for d, s in zip(_left_pad(first, len(shape)), shape))
    if op == "linear":
        return first[:-1] + (_plain(shape[-1]),)
    if op == "matmul":
        return _matmul(ins, attrs, shape)
    if op == "einsum":
        return _einsum(ins, attrs, shape)
    if op == "attention":
        q = first
        v = ins[2] if len(ins) > 2 else ins[-1]
        if v is None:
            return None
        return q[:-1] + (v[-1],) if len(q) == len(shape) else None
    if op == "reduce":
        dims = {d % len(first) for d in attrs.extra["dims"]}
        if attrs.extra.get("keepdim"):
            return tuple(_plain(1) if i in dims else d for i, d in enumerate(first))
        return tuple(d for i, d in enumerate(first) if i not in dims)
    if op == "index":
        return _index(name, first, attrs.extra["index"], shape)
    if op == "unknown" and "unfold" in attrs.extra:
        return unfold_dims(name, attrs.extra["unfold"], first, shape)
    if op == "unknown" and "fold" in attrs.extra:
        return fold_dims(name, attrs.extra["fold"], first, shape)
    if op == "split":
        dim = attrs.extra["split_dim"]
        if attrs.extra.get("unbind"):
            return first[:dim] + first[dim + 1:]
        return first[:dim] + (_slice_dim(first[dim], shape[dim]),) + first[dim + 1:]
    return None


def _input_dims(name: str, shape: tuple[int, ...]) -> tuple[Dim, ...]:
    if len(shape) < 3:
        return tuple(_plain(s) for s in shape)
    spatial = tuple(
        Dim(n, (Digit(n, axis=i, map=name, step=1, extent=n, grows=True),))
        for i, n in enumerate(shape[2:])
    )
    return (_plain(shape[0]), _plain(shape[1])) + spatial


def _concat(ins, axis, shape) -> tuple[Dim, ...] | None:
    """Along ``axis`` a class token (a constant, not an IR input) joins as ``prefix``."""
    known = [i for i in ins if i is not None]
    if not known or len(known) != len(ins):
        return None
    rank = len(shape)
    axis = (1 if axis is None else axis) % rank
    out = []
    for k, size in enumerate(shape):
        if k != axis:
            full = [i[k] for i in known if i[k].size == size]
            carrying = [d for d in full if d.spatial]
            if not full:
                return None
            out.append(carrying[0] if carrying else full[0])
            continue
        pieces = [i[k] for i in known]
        carrying = [p for p in pieces if p.spatial]
        if not carrying:
            out.append(_plain(size))
        elif len(carrying) == 1 and carrying[0].digits is not None and \
                pieces[-1] is carrying[0]:
            # position-free pieces (class tokens) in front of the positions
            out.append(Dim(size, carrying[0].digits, prefix=size - carrying[0].size))
        else:
            return None
    return tuple(out)


def _with_constant_prefix(first, attrs, shape) -> tuple[Dim, ...] | None:
    rank = len(shape)
    axis = (1 if attrs.axis is None else attrs.axis) % rank
    constants = attrs.extra.get("constants", ())
    if len(first) != rank or not constants:
        return None
    if any(c["slot"] != i for i, c in enumerate(constants)):
        return None  # only constants in front (class / distillation tokens)
    dim = first[axis]
    if dim.digits is None:
        return None
    out = list(first)
    out[axis] = Dim(shape[axis], dim.digits, prefix=dim.prefix + shape[axis] - dim.size)
    return tuple(out)


def _regroup(first: tuple[Dim, ...], shape: tuple[int, ...]) -> tuple[Dim, ...] | None:
    """view/reshape/flatten: regroup the digits; a digit splits where a size divides it."""
    if any(d.digits is None for d in first):
        return _keep_whole(first, shape)
    if any(d.prefix for d in first):
        return _keep_whole(first, shape)
    digits: list[Digit] = [x for d in first for x in d.digits]
    out: list[Dim] = []
    for size in shape:
        taken: list[Digit] = []
        need = size
        while need > 1:
            if not digits:
                return None
            d = digits[0]
            if d.size == 1:
                digits.pop(0)
                continue
            if need % d.size == 0:
                taken.append(digits.pop(0))
                need //= d.size
            elif d.size % need == 0:
                low = d.size // need
                taken.append(Digit(need, d.axis, d.map, d.step * low, d.extent, d.grows))
                digits[0] = Digit(low, d.axis, d.map, d.step, d.extent, False)
                need = 1
            else:
                return None
        out.append(Dim(size, _joined(taken)))
    if any(d.size != 1 for d in digits):
        return None
    return tuple(out)


def _joined(digits: list[Digit]) -> tuple[Digit, ...]:
    """Adjacent digits that count one axis contiguously (a folded-back window) become one."""
    out: list[Digit] = []
    for d in digits:
        if out and out[-1].axis is not None and (out[-1].map, out[-1].axis) == (d.map, d.axis) \
                and out[-1].step == d.step * d.size:
            hi = out.pop()
            d = Digit(hi.size * d.size, d.axis, d.map, d.step, d.extent, hi.grows)
        out.append(d)
    return tuple(out)


def _keep_whole(first, shape) -> tuple[Dim, ...] | None:
    """A dim that is no mixed radix (class token in front) survives a reshape only unchanged:
    match it by its place among the dims of other sizes."""
    special = [i for i, d in enumerate(first) if d.digits is None or d.prefix]
    if len(special) != 1:
        return None
    k = special[0]
    before = math.prod(d.size for d in first[:k])
    acc = 1
    for j, s in enumerate(shape):
        if acc == before and s == first[k].size:
            left = _regroup(first[:k], shape[:j]) if j else ()
            right = _regroup(first[k + 1:], shape[j + 1:])
            if left is None or right is None:
                return None
            return tuple(left) + (first[k],) + tuple(right)
        acc *= s
    return None


def roll_of_concat(g: nx.DiGraph, name: str) -> tuple[str, int, int] | None:
    """``cat(x[k:], x[:k])`` along one dim (how ONNX exports ``torch.roll``): (x, dim, shift)."""
    data = g.nodes[name]
    shape = _shape(g, name)
    if shape is None or len(data["inputs"]) != 2:
        return None
    axis = (data["attrs"].axis or 0) % len(shape)
    pieces = []
    for src in data["inputs"]:
        piece = g.nodes[src]
        if piece["op"] != "slice" or not piece["inputs"]:
            return None
        cuts = layout_slices(piece["attrs"], len(shape))
        if any(c != (None, None, 1) and c != (0, None, 1) for i, c in enumerate(cuts) if i != axis):
            return None
        pieces.append((piece["inputs"][0], cuts[axis]))
    (a, (s0, e0, st0)), (b, (s1, e1, st1)) = pieces
    n = shape[axis]
    if a != b or st0 != 1 or st1 != 1 or _shape(g, a) != shape:
        return None
    begin = (s0 or 0) % n
    if e0 not in (None, n) or (s1 or 0) != 0 or (e1 if e1 is not None else n) % n != begin:
        return None
    shift = -begin if begin <= n // 2 else n - begin
    return a, axis, shift


def _slice_dim(dim: Dim, size: int) -> Dim:
    """A piece of a dim: position-free pieces stay plain; a piece of positions is unknown."""
    if not dim.spatial:
        return _plain(size)
    return Dim(size, None)


def _index(name, first, items, shape) -> tuple[Dim, ...] | None:
    """Index items per dim: ints drop a dim, None adds one, slices keep or cut, one constant
    tensor whose values are known picks positions (:mod:`archlint.passes.provenance_picks`)."""
    n_explicit = sum(1 for it in items if it[0] in ("int", "slice", "tensor", "blocks"))
    if any(it[0] == "blocks" for it in items) and any(it[0] == "ellipsis" for it in items):
        return None
    if sum(1 for it in items if it[0] == "tensor") > 1 or (
            any(it[0] == "tensor" for it in items) and any(it[0] == "int" for it in items)):
        return None  # several advanced indices (ints count) broadcast and may move to the front
    out: list[Dim] = []
    pos = 0
    for it in items:
        kind = it[0]
        if kind == "ellipsis":
            fill = len(first) - n_explicit
            out.extend(first[pos:pos + fill])
            pos += fill
        elif kind == "none":
            out.append(_plain(1))
        elif kind == "int":
            pos += 1
        elif kind == "blocks":  # ONNX's F.unfold: one axis gathered into (offset, block)
            pair = blocks_dims(name, it, first[pos])
            if pair is None:
                return None
            out.extend(pair)
            pos += 1
        elif kind == "tensor":
            if len(it) < 2:
                return None  # values unknown (meta device, computed in forward)
            others = [d for j, d in enumerate(first) if j != pos]
            picked = pick_dim(name, first[pos], it[1], others)
            if picked is None:
                return None
            out.append(picked[0])
            pos += 1
        else:
            _, start, stop, step = it
            dim = first[pos]
            pos += 1
            out.append(_cut(dim, start, stop, step))
    out.extend(first[pos:])
    return tuple(out)


def _cut(dim: Dim, start, stop, step) -> Dim:
    if (start in (None, 0)) and stop is None and step == 1:
        return dim
    if not dim.spatial:
        length = len(range(*slice(start, stop, step).indices(dim.size)))
        return _plain(length)
    # x[:, 1:] drops the class tokens in front: the positions remain
    begin = 0 if start is None else start % dim.size
    end = dim.size if stop is None else (stop % dim.size if stop < 0 else min(stop, dim.size))
    if step == 1 and dim.prefix and begin == dim.prefix and end == dim.size:
        return Dim(dim.size - dim.prefix, dim.digits)
    return Dim(len(range(begin, end, step)), None)
