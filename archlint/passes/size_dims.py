"""Per-op dims of the input-size sweep: module functions without state, each taking the input
dims (an int or an int64 array over all swept sizes per axis) and giving
``(dims, invalid mask or False, unknown reason or None)``."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from archlint.passes.formulas import UnsupportedOp

Dims = tuple  # per full axis: int | np.ndarray | None


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
        if arrays and not big and all(a is arrays[0] for a in arrays):
            out.append(arrays[0])  # a residual add of a size-keeping branch: one shared array
        elif arrays:
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
    first = ins[0]
    if len(first) == rank and type(first) is tuple and all(a is b for a, b in zip(out, first)):
        # every dim is the first operand's (a residual add): its tuple itself, so the ops
        # after the merge see the same object (the forward pass memoizes on it)
        return first, invalid, None
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


def _one_spatial_element(first: Dims) -> Any:
    """Where the spatial axes hold one element in all (instance norm with input statistics
    raises there, as F.instance_norm checks before any kernel runs)."""
    if len(first) < 3 or any(d is None for d in first[2:]):
        return False
    return _product(first[2:]) == 1


def _permute(first: Dims, attrs) -> tuple[Dims | None, Any, str | None]:
    """permute / transpose (torch) and Transpose (ONNX): output dim i is input dim perm[i]."""
    perm = attrs.extra.get("perm")
    if perm is None or len(perm) != len(first) or sorted(perm) != list(range(len(first))):
        raise UnsupportedOp("permute without a known permutation of its input's axes")
    return tuple(first[p] for p in perm), False, None
