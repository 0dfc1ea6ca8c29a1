"""Fast paths of :mod:`archlint.passes.receptive_field` for chains of local fields: window ops
and two-branch residual merges on plain ``N, C, *spatial`` maps whose fields are period-1
grids (a CNN trunk, a chain of residual blocks) are integer arithmetic on the grids, without
the general path's per-node checks. They give exactly what the general path gives, or None
when a node is not this case (the general path then decides).
"""

from __future__ import annotations

from typing import Any

from archlint.graph import ELEMENTWISE_MERGES, Attrs


def _per_axis(values: Any, axis: int, default: Any) -> Any:
    if not values:
        return default
    return values[axis] if axis < len(values) else values[-1]


#: window ops whose per-axis step is ``_window`` (conv_transpose has its own)
_PLAIN_WINDOWS = frozenset({"conv", "max_pool", "avg_pool", "lp_pool"})


def _local_fast(data, op, inputs, states, flags, plain_of, windows, nc_plain):
    """(axes, aligned) of a window op or a two-branch elementwise merge whose inputs and output
    are plain NC* maps with local period-1 fields on every axis (a chain of convolutions and
    residual adds), by integer arithmetic; None: not this case (the general path decides)."""
    for i in inputs:
        if flags[i] or not plain_of[i]:
            return None
    shapes = data.get("shapes")
    if not shapes or shapes[0] is None:
        return None
    count = max(len(shapes[0]) - 2, 0)
    if not nc_plain(data.get("provenance")):
        return None
    if op in ELEMENTWISE_MERGES:
        if not count:
            return None
        two = _two_local_branches([states[inputs[0]], states[inputs[1]]], False, count)
        return None if two is None else (two[0], two[2])
    axes_in = states[inputs[0]]
    if count != len(axes_in):
        return None
    attrs = data["attrs"]
    key = (op, id(attrs), count)
    plan = windows.get(key)
    if plan is None or plan[0] is not attrs:
        plan = windows[key] = (attrs, _window_plan(op, attrs, count))
    out = []
    for state, params in zip(axes_in, plan[1]):
        if params is None or type(state) is not tuple or state[0] != 1:
            return None
        k, s, p, d = params
        _, shift, starts, ends = state  # _window's period-1 case
        out.append((1, shift * s, (starts[0] - p * shift,), (ends[0] + ((k - 1) * d - p) * shift,)))
    return tuple(out), None


def _window_plan(op: str, attrs: Attrs, count: int) -> list[tuple[int, int, int, int] | None]:
    """(k, s, p, d) per axis as ``_window_op`` reads them; None where ``_axis_step`` would not
    reach ``_window`` with them (auto padding, a kernel, stride or dilation below 1)."""
    if attrs.auto_pad.upper().startswith("SAME") and not attrs.padding:
        return [None] * count
    plan = []
    for axis in range(count):
        k = _per_axis(attrs.kernel, axis, 1)
        s = _per_axis(attrs.stride, axis, k if op in ("max_pool", "avg_pool", "lp_pool") else 1)
        d = _per_axis(attrs.dilation, axis, 1)
        p = _per_axis(attrs.padding, axis, (0, 0))[0]
        plan.append((k, s, p, d) if k >= 1 and s >= 1 and d >= 1 else None)
    return plan


def _two_local_branches(branches, any_global: bool, count: int):
    """``_merge`` of two branches with a known local field on every axis (a residual add),
    without the general path's per-axis lists: equal grids merge to themselves, period-1 grids
    of one stride to their hull (what ``_merge_axis`` and ``_aligned`` give). None: not this case."""
    a, b = branches
    if any_global or len(a) != count or len(b) != count:
        return None
    axes = []
    aligned = True
    for sa, sb in zip(a, b):
        if type(sa) is not tuple or type(sb) is not tuple:
            return None  # unknown, GLOBAL or ATTENDED: the general path
        if sa == sb:
            axes.append(sa)
            continue
        if sa[0] != 1 or sb[0] != 1 or sa[2][0] is None or sb[2][0] is None:
            return None
        if sa[1] != sb[1]:  # different strides: unknown hull, misaligned
            axes.append(None)
            aligned = False
            continue
        axes.append((1, sa[1], (min(sa[2][0], sb[2][0]),), (max(sa[3][0], sb[3][0]),)))
        if sa[2][0] + sa[3][0] != sb[2][0] + sb[3][0]:  # centres differ
            aligned = False
    return tuple(axes), False, aligned
