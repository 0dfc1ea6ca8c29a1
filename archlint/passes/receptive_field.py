"""Receptive field per tensor and spatial axis, in input pixels (Araujo et al., Distill 2019).

Public API
----------
``receptive_field_pass(g)`` writes, for every node:

``g.nodes[n]["rf"]``
    ``None`` when the output has no spatial axes (after flatten, a linear head); else a tuple
    with one entry per spatial axis: a :class:`ReceptiveField`, or ``None`` where it is unknown
    (past an op nobody can model: ``unknown``, a reshape of spatial axes, an align_corners
    resize...) or where it covers the whole input (see ``rf_global``). Never a guess.
``g.nodes[n]["rf_global"]``
    True when every value of the output depends on the whole input: the node only sees
    globally pooled data (global pooling, an adaptive pool to 1, and anything computed from
    them only, such as the excitation branch of a squeeze-and-excitation block or the image
    pooling branch of ASPP). Its ``rf`` entries are None: the size is the input size.
``g.nodes[n]["rf_aligned"]``
    On merges (add/sub/mul/div/concat): True when every branch that is not global has the same
    stride and the same centre offset on every spatial axis, False when they differ, None when
    a branch's field is unknown. Global branches are left out: a 1x1 map broadcast over the
    other branch is the same at every position, so it cannot be misaligned. Other nodes: None.

The model
---------
For an output unit ``j`` the field is the span ``[start(j), end(j)]`` of input pixels it reads.
Through convolutions and pools ``start(j) = j*S - P`` and ``r = end - start + 1`` are the same for
every unit and follow the Distill recurrences::

    k_eff = d*(k-1) + 1;  r_out = r_in + (k_eff-1)*S_in;  S_out = S_in*s;  P_out = P_in + p_begin*S_in

Upsampling makes the stride fractional (``fractions.Fraction``), and then units differ by phase:
after a nearest upsample by 2, units 2i and 2i+1 read the same input, so a following 2x2 pool
reads one input, not "1.5". The pass therefore keeps, per axis, the exact span of every unit
in one period ``T`` (``start(j + T) = start(j) + T*S``) and reports:

* ``size`` (r): the largest span over the units of a period (an integer number of pixels);
* ``stride`` (S): input pixels per output unit, a Fraction;
* ``center_offset``: the centre of unit ``j`` minus ``j*S``, averaged over a period (for plain
  CNNs simply the centre of unit 0); ``padding`` (P) is ``(r-1)/2 - center_offset``, which
  equals the Distill effective padding whenever the period is 1.

``ReceptiveField.bounds(j)`` gives the exact span of unit ``j``.

Per op (``p`` is the begin padding):

* conv / pools / lp_pool: unit j reads positions ``j*s - p + t*d``, t < k.
* conv_transpose (k, s, p, d): unit o reads inputs ``i = (o + p - t*d) / s`` for the taps t
  where that divides, so ``S_out = S_in / s`` and each unit reads at most ``ceil(k_eff / s)``
  inputs: with ``k % s == 0`` and d = 1, exactly ``k / s``, so ``r_out = r_in + (k/s - 1)*S_in``.
* upsample by an integer factor f (or down by an integer m): the source coordinate of each
  output as PyTorch and ONNX Resize compute it (nearest: ``floor(j/f)``; nearest-exact and the
  ONNX rounding modes; linear/bilinear/trilinear: the two taps around ``(j+1/2)/f - 1/2``;
  cubic: four). Nearest keeps r and divides S by f; bilinear adds one input tap.
  align_corners, non-integer ratios and unlisted coordinate modes: unknown.
* pixel_shuffle r: like nearest upsampling by r; pixel_unshuffle r: a k = s = r window.
* pad (negative pads crop) and slice (start, step) shift and stride the grid exactly.
* adaptive pool to 1 and global pool: global. Adaptive pool to t from n with t | n or n | t:
  the equivalent fixed window at the example size; otherwise unknown.
* pointwise, norm, output: unchanged (normalization statistics are ignored, as in Distill).
* merges: the hull of the branches' spans (with equal centres: the largest field); branches
  with different strides give an unknown field. A concat along a spatial axis: unknown there.
* linear on a spatial tensor: global along its last axis.

Off the ``N, C, *spatial`` layout (tokens, windows, channels-last) the field follows the axis
provenance instead (:mod:`archlint.passes.token_fields`): ``rf`` then has one entry per input
spatial axis, ``rf_global_axes`` says per axis whether every value reads the whole input, and
``rf_global_cause`` names the op that made it so (attention, a token MLP, a mean over tokens).
Such a field (``ATTENDED``) dominates a merge, unlike pooled data broadcast back (``GLOBAL``).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import networkx as nx

from archlint.graph import ELEMENTWISE_MERGES, MERGES, Attrs, ops
from archlint.passes.field_grid import (  # noqa: F401  (GLOBAL, ATTENDED, Grid: re-exported)
    ATTENDED,
    GLOBAL,
    Grid,
    ReceptiveField,
    _aligned,
    _field,
    _integer_ratio,
    _is_global,
    _merge_axis,
    _resample,
    _transpose,
    _upsample,
    _window,
)

from archlint.passes.field_chain import (
    _PLAIN_WINDOWS,
    _local_fast,
    _per_axis,
    _two_local_branches,
)

__all__ = ["ReceptiveField", "receptive_field_pass"]


# -- the pass -------------------------------------------------------------------------------


def _spatial_count(g: nx.DiGraph, name: str, default: int) -> int:
    shapes = g._node[name].get("shapes")  # the raw node dict: this runs once per node
    if shapes and shapes[0] is not None:
        return max(len(shapes[0]) - 2, 0)
    return default


def _example_spatial(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    shapes = g.nodes[name].get("shapes")
    if not shapes or shapes[0] is None or len(shapes[0]) < 3:
        return None
    return tuple(shapes[0][2:])


def _window_op(state: Any, op: str, attrs: Attrs, axis: int) -> Any:
    k = _per_axis(attrs.kernel, axis, 1)
    default_stride = k if op in ("max_pool", "avg_pool", "lp_pool") else 1
    s = _per_axis(attrs.stride, axis, default_stride)
    d = _per_axis(attrs.dilation, axis, 1)
    p = _per_axis(attrs.padding, axis, (0, 0))[0]
    if op == "conv_transpose":
        return _transpose(state, k, s, p, d)
    return _window(state, k, s, p, d)


def _axis_step(g: nx.DiGraph, name: str, op: str, attrs: Attrs, axis: int, state: Any,
               producer: str) -> Any:
    """The output state of one axis of a single-input spatial op."""
    if state is None:
        return None
    if state is ATTENDED:
        return ATTENDED
    if op == "global_pool":
        return GLOBAL
    if op == "adaptive_pool":
        target = _per_axis(attrs.size, axis, None)
        if target is None:
            return state
        if target == 1:
            return GLOBAL
        if state is GLOBAL:
            return GLOBAL
        n = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
        if n is None:
            return None
        if n % target == 0:
            return _window(state, n // target, n // target, 0)
        if target % n == 0:
            return _upsample(state, target // n, [(0, 0)] * (target // n))
        return None
    if state is GLOBAL:
        return GLOBAL
    if op in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool"):
        if attrs.auto_pad.upper().startswith("SAME") and not attrs.padding:
            return None
        return _window_op(state, op, attrs, axis)
    if op == "pad":
        pb = _per_axis(attrs.padding, axis, (0, 0))[0]
        return _window(state, 1, 1, pb)
    if op == "slice":
        start, _, step = _per_axis(attrs.slices, axis, (None, None, 1))
        if step < 1:
            return None
        if start is None or start >= 0:
            begin = start or 0  # past the end the slice is empty, and invalid anyway
        else:
            n = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
            if n is None:
                return None
            begin = min(max(start + n if start < 0 else start, 0), n)
        return _window(state, 1, step, -begin)
    if op == "pixel_shuffle":
        r = int(attrs.factor or 1)
        return _upsample(state, r, [(0, 0)] * r)
    if op == "pixel_unshuffle":
        r = int(attrs.factor or 1)
        return _window(state, r, r, 0)
    if op == "upsample":
        ratio = None
        if attrs.scale is not None and attrs.size is None and attrs.size_from is None:
            ratio = _integer_ratio(float(_per_axis(attrs.scale, axis, 1.0)))
        else:
            n_in = (_example_spatial(g, producer) or (None,) * (axis + 1))[axis]
            n_out = (_example_spatial(g, name) or (None,) * (axis + 1))[axis]
            if n_in and n_out:
                ratio = Fraction(n_in, n_out)
        return None if ratio is None else _resample(state, attrs, ratio)
    return None




#: ops whose field is their input's (normalization statistics are ignored, as in Distill)
_SAME_FIELD = frozenset({"pointwise", "norm", "output"})

#: "not computed yet" in the pass's lazy per-node tables (None is a real value there)
_UNSET = object()


def receptive_field_pass(g: nx.DiGraph) -> None:
    """Write ``rf``, ``rf_global``, ``rf_global_axes``, ``rf_global_cause`` and ``rf_aligned``
    on every node (see the module docs and :mod:`archlint.passes.token_fields`)."""
    from archlint.passes import token_fields as tf
    from archlint.passes.provenance import provenance_pass, roll_of_concat

    nodes = g._node  # the node dicts themselves: written below
    for data in nodes.values():
        if "provenance" not in data:
            provenance_pass(g)
            break
    states: dict[str, tuple[Any, ...]] = {}
    flags: dict[str, bool] = {}
    # A node's rf, rf_global_axes and rf_global_cause are read back from its own dict (written
    # below) instead of kept again in tables: fewer stores per node.
    #: per-map fields of the nodes that have them; a plain NC* node off the token path has
    #: none here: built from its provenance and axes only if a token op reads them
    fields: dict[str, Any] = {}
    #: nc_plain of each node's provenance, asked once per node (its consumers ask again)
    plain_of: dict[str, bool] = {}

    def field_of(node: str) -> Any:
        found = fields.get(node, _UNSET)
        if found is _UNSET:
            found = fields[node] = tf.fields_from_axes(
                nodes[node].get("provenance"), states[node]) if plain_of.get(node) else None
        return found

    n_axes = max((_spatial_count(g, n, 0) for n, d in nodes.items() if d["op"] == "input"),
                 default=0)
    windows: dict[tuple, Any] = {}  # (op, attrs record, axes) -> per-axis window parameters
    for name in ops(g):  # the graph's cached topological order
        data = nodes[name]
        op = data["op"]
        inputs = data["inputs"]
        if op in _SAME_FIELD and len(inputs) == 1:
            # a pointwise op on a plain NC* map (the same dims object as its input), whose
            # input has a field and no global cause: everything is its input's (what the
            # general path below computes for it, without asking again)
            src = inputs[0]
            src_data = nodes[src]
            rf = src_data["rf"]
            dims = data.get("provenance")
            axes = states[src]
            shapes = data.get("shapes")  # _spatial_count, inline: this runs once per node
            if rf is not None and dims is not None and dims is src_data.get("provenance") \
                    and plain_of[src] and src_data["rf_global_cause"] is None and len(axes) == (
                        max(len(shapes[0]) - 2, 0) if shapes and shapes[0] is not None
                        else len(axes)):
                plain_of[name] = True
                states[name] = axes
                flags[name] = is_global = flags[src]
                _write(data, rf, is_global, src_data["rf_global_axes"], None, None)
                continue
        fast = None
        if op in _PLAIN_WINDOWS and len(inputs) == 1 or op in ELEMENTWISE_MERGES \
                and len(inputs) == 2 and inputs[0] != inputs[1]:
            fast = _local_fast(data, op, inputs, states, flags, plain_of, windows, tf.nc_plain)
        if fast is not None:
            # a window op or a two-branch merge of local fields on plain NC* maps: what the
            # general path below gives (no token fields, no global axis), without its checks
            axes, aligned = fast
            plain_of[name] = True
            rf = tuple([_field(st) if type(st) is tuple else None for st in axes]) if axes \
                else None
            states[name] = axes
            flags[name] = False
            _write(data, rf, False, (False,) * len(axes) if rf else (), None, aligned)
            continue
        aligned = None
        rf = None
        if op == "input" or not inputs:
            count = _spatial_count(g, name, 0)
            axes = (None,) * count if op != "input" else ((1, 1, (0,), (0,)),) * count
            is_global = False
        elif op in ("pointwise", "norm", "output"):
            src = inputs[0]
            axes, is_global = states[src], flags[src]
            rf = nodes[src]["rf"]
            if _spatial_count(g, name, len(axes)) != len(axes):
                axes, rf = (None,) * _spatial_count(g, name, 0), None
        elif op in MERGES:
            axes, is_global, aligned = _merge(g, name, op, data["attrs"], inputs, states, flags)
        elif op in tf.TOKEN_OPS:
            count = _spatial_count(g, name, 0)
            axes, is_global = (None,) * count, False
        else:
            axes, is_global = _single(g, name, op, data["attrs"], inputs[0], states, flags)
        dims = data.get("provenance")
        plain = plain_of[name] = tf.nc_plain(dims)
        cause = None
        for i in inputs:
            if nodes[i]["rf_global_cause"]:
                cause = nodes[i]["rf_global_cause"]
                break
        token = dims is not None and (op in tf.TOKEN_OPS or (
            op not in ("input", "output") and inputs
            and not (plain and all(plain_of[i] for i in inputs))
            and (op not in tf.MAP_OPS or not plain_of[inputs[0]])))
        global_axes = None
        own = None
        if op in ("pointwise", "norm", "output") and rf is not None and not token:
            global_axes = nodes[inputs[0]]["rf_global_axes"]
        if token:
            rolled = roll_of_concat(g, name) if op == "concat" else None
            if rolled is not None:  # ONNX's torch.roll: cat(x[k:], x[:k])
                own = tf.token_fields(g, name, [field_of(rolled[0])],
                                      [nodes[rolled[0]].get("provenance")])
            else:
                own = tf.token_fields(g, name, [field_of(i) for i in inputs],
                                      [nodes[i].get("provenance") for i in inputs])
            if own is not None and any(v is ATTENDED for v in own.values()) and not any(
                    v is ATTENDED for i in inputs for v in (field_of(i) or {}).values()):
                cause = name
            fields[name] = own
        elif not plain:  # a plain node's fields are built when read (field_of)
            fields[name] = None
        if token and own is not None and (len(dims) >= 3 or any(
                v is ATTENDED for v in own.values())):
            if plain:
                axes = tf.axes_from_fields(dims, own)
                rf = None
                is_global = bool(axes) and all(_is_global(a) for a in axes)
                global_axes = tuple(_is_global(a) for a in axes)
            else:
                shown, global_axes = tf.report(dims, own, n_axes)
                rf = tuple(_field(st) if isinstance(st, tuple) else None for st in shown)
                is_global = bool(global_axes) and all(global_axes)
                axes = (None,) * _spatial_count(g, name, 0) if not is_global else \
                    (ATTENDED,) * _spatial_count(g, name, 0)
        if rf is None and axes:
            rf = tuple(_field(s) if isinstance(s, tuple) else None for s in axes)
        if global_axes is None:
            global_axes = tuple(_is_global(a) for a in axes) if rf else ()
        states[name] = axes
        flags[name] = is_global
        _write(data, rf, is_global, global_axes,
               cause if any(global_axes) or is_global else None, aligned)


def _write(data: dict, rf, is_global: bool, global_axes, cause, aligned) -> None:
    """One node's public facts (the pass reads rf, rf_global_axes and rf_global_cause of a
    node's inputs back from here)."""
    data["rf"] = rf
    data["rf_global"] = is_global
    data["rf_global_axes"] = global_axes
    data["rf_global_cause"] = cause
    data["rf_aligned"] = aligned


def _single(g, name, op, attrs, src, states, flags) -> tuple[tuple[Any, ...], bool]:
    axes_in, global_in = states[src], flags[src]
    count = _spatial_count(g, name, len(axes_in))
    if global_in:
        kind = ATTENDED if any(a is ATTENDED for a in axes_in) else GLOBAL
        return (kind,) * count, True
    if op in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_pool",
              "global_pool", "upsample", "pad", "slice", "pixel_shuffle", "pixel_unshuffle"):
        if op == "global_pool":
            return (GLOBAL,) * count, True
        if count != len(axes_in):
            return (None,) * count, False
        axes = tuple(
            _axis_step(g, name, op, attrs, i, s, src) for i, s in enumerate(axes_in)
        )
        return axes, bool(axes) and all(_is_global(a) for a in axes)
    if op == "flatten":
        rank = len(axes_in) + 2
        start = 1 if attrs.axis is None else attrs.axis % rank
        end = rank - 1 if attrs.end_axis is None else attrs.end_axis % rank
        if count == 0:
            return (), bool(axes_in) and all(_is_global(a) for a in axes_in)
        merged = axes_in[max(start - 2, 0): end - 1]
        kept_before = axes_in[: max(start - 2, 0)]
        kept_after = axes_in[end - 1:]
        one = GLOBAL if merged and all(_is_global(a) for a in merged) else None
        axes = kept_before + (one,) + kept_after
        return (axes if len(axes) == count else (None,) * count), False
    if op == "linear":
        if not axes_in:
            return (), False
        if count != len(axes_in):
            return (None,) * count, False
        return axes_in[:-1] + (GLOBAL,), all(_is_global(a) for a in axes_in[:-1])
    # reshape, unknown, and anything else: only a fully global input stays known
    if axes_in and all(_is_global(a) for a in axes_in):
        return (ATTENDED if any(a is ATTENDED for a in axes_in) else GLOBAL,) * count, True
    return (None,) * count, False


def _merge(g, name, op, attrs, inputs, states, flags):
    producers = list(dict.fromkeys(inputs))
    branches = [states[p] for p in producers]
    count = _spatial_count(g, name, max((len(b) for b in branches), default=0))
    if op in ELEMENTWISE_MERGES and len(producers) == 2 and count:
        two = _two_local_branches(branches, flags[producers[0]] or flags[producers[1]], count)
        if two is not None:
            return two
    if all(flags[p] for p in producers):
        kind = ATTENDED if any(a is ATTENDED for b in branches for a in b) else GLOBAL
        return (kind,) * count, True, True
    skip = None
    if op == "concat":
        rank = count + 2
        axis = 1 if attrs.axis is None else attrs.axis % rank if rank else 1
        skip = axis - 2 if axis >= 2 else None
    # right-align (broadcasting); a flat global branch counts as global on every axis
    aligned_branches = []
    for p, b in zip(producers, branches):
        if flags[p]:
            b = (ATTENDED if any(a is ATTENDED for a in b) else GLOBAL,) * count
        elif len(b) < count:
            b = (GLOBAL,) * (count - len(b)) + tuple(b) if op in ELEMENTWISE_MERGES else (None,) * count
        aligned_branches.append(tuple(b[len(b) - count:]) if count else ())
    axes = []
    for axis in range(count):
        if axis == skip:
            axes.append(None)
            continue
        axes.append(_merge_axis([b[axis] for b in aligned_branches]))
    if axes and all(a is ATTENDED for a in axes):
        return tuple(axes), True, _aligned([tuple(s for i, s in enumerate(b) if i != skip)
                                            for b in aligned_branches])
    kept = aligned_branches if skip is None else [
        tuple(s for i, s in enumerate(b) if i != skip) for b in aligned_branches]
    return tuple(axes), False, _aligned(kept)
