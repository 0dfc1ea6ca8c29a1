"""Op mapping for the token-layout calls: merges, reductions, split, indexing, permute,
softmax, matmul, einsum, attention, expand, roll, unbind (what axis provenance reads).

Registered by :mod:`archlint.frontends.torch.op_attrs`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx

from archlint.frontends.torch.opcall import (
    OpCall,
    _per_axis,
)
from archlint.graph import Attrs


def _merge_fn(kind: str) -> Callable[[OpCall], tuple[str, Attrs]]:
    """A merge only when both operands are activations; ``x * 0.5`` is pointwise."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        raws = list(call.raw_args[:2])
        if len(raws) < 2:
            raws.append(call.raw_kwargs.get("other"))
        both = all(call.producer(r) is not None for r in raws)
        if both:
            return kind, Attrs()
        return "pointwise", Attrs(extra=_constant_operand(call, raws))
    return attrs


def _constant_operand(call: OpCall, raws: list[Any]) -> dict[str, Any]:
    """The operand of ``x + self.pos_embed`` that is a parameter or buffer (not a scalar)."""
    for slot, raw in enumerate(raws):
        value = call.args[slot] if slot < len(call.args) else call.kwargs.get("other")
        if call.producer(raw) is not None or not isinstance(value, torch.Tensor):
            continue
        if not isinstance(raw, (fx.Node, torch.Tensor)) or value.dim() == 0:
            continue
        return {"constant": {"name": call.constant_name(raw), "shape": tuple(value.shape),
                             "adapts": call.sized_from_activation(raw), "slot": slot}}
    return {}


def _reduce_fn(kind: str) -> Callable[[OpCall], tuple[str, Attrs]]:
    """``x.mean((2, 3))`` / ``amax`` over every spatial axis is a global pool."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        rank = call.input_rank()
        dims = call.get("dim")
        if rank is None or dims is None:
            return "unknown", Attrs()
        dims = {int(d) % rank for d in _per_axis(dims, 1)}
        if rank < 3 or dims != set(range(2, rank)):
            return "reduce", Attrs(extra={"kind": kind, "dims": tuple(sorted(dims)),
                                          "keepdim": bool(call.get("keepdim", False))})
        keepdim = bool(call.get("keepdim", False))
        return "global_pool", Attrs(extra={"kind": kind, "keepdim": keepdim})
    return attrs


def _split_fn(call: OpCall) -> tuple[str, Attrs]:
    """A split along batch or channels leaves the spatial axes alone."""
    rank = call.input_rank()
    dim = int(call.get("dim", 0))
    if rank is None:
        return "unknown", Attrs()
    if dim % rank >= 2:
        return "split", Attrs(extra={"split_dim": dim % rank})
    nd = rank - 2
    return "slice", Attrs(slices=((None, None, 1),) * nd, extra={"split_dim": dim % rank})


def _getitem_fn(call: OpCall) -> tuple[str, Attrs]:
    """``x[:, :, a:b, c:d]`` -> slice per spatial axis; other indexing is unknown."""
    x = call.args[0]
    if not isinstance(x, torch.Tensor):
        return "pointwise", Attrs()  # an element of a module's tuple output
    index = call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    rank = x.dim()
    if sum(1 for i in index if i is Ellipsis) > 1:
        return "unknown", Attrs()
    if any(not isinstance(i, slice) and i is not Ellipsis for i in index):
        return _index_fn(call)
    explicit = [i for i in index if i is not Ellipsis]
    fill = rank - len(explicit)
    per_dim: list[slice] = []
    for i in index:
        per_dim.extend([slice(None)] * fill if i is Ellipsis else [i])
    per_dim.extend([slice(None)] * (rank - len(per_dim)))
    spatial = tuple(
        (_opt_int(s.start), _opt_int(s.stop), 1 if s.step is None else int(s.step))
        for s in per_dim[2:]
    )
    extra = {}
    if any(s != slice(None) for s in per_dim[:2]):
        extra["slices_batch_channel"] = tuple((s.start, s.stop, s.step) for s in per_dim[:2])
    return "slice", Attrs(slices=spatial, extra=extra)


def _index_fn(call: OpCall) -> tuple[str, Attrs]:
    """``x[0]``, ``x[:, 0]``, ``x[:, 1:]``, ``x[..., None]``: one entry per index item."""
    x = call.args[0]
    index = call.args[1]
    index = index if isinstance(index, tuple) else (index,)
    items: list[tuple] = []
    for i in index:
        if i is Ellipsis:
            items.append(("ellipsis",))
        elif i is None:
            items.append(("none",))
        elif isinstance(i, slice):
            items.append(("slice", _opt_int(i.start), _opt_int(i.stop),
                          1 if i.step is None else int(i.step)))
        elif isinstance(i, int) or (isinstance(i, torch.Tensor) and i.dim() == 0
                                    and not i.dtype.is_floating_point and i.device.type != "meta"):
            items.append(("int", int(i)))
        else:
            raw = _raw_item(call, len(items))
            items.append(_tensor_item(call.constant_value(raw) if isinstance(i, torch.Tensor)
                                      else i, call.producer(raw)))
    return "index", Attrs(extra={"index": tuple(items), "rank": x.dim()})


#: longest index whose values the IR keeps (a real network's token picks are far shorter)
MAX_INDEX_VALUES = 4096


def _raw_item(call: OpCall, k: int) -> Any:
    raw = call.raw_args[1] if len(call.raw_args) > 1 else None
    if isinstance(raw, tuple):
        return raw[k] if k < len(raw) else None
    return raw if k == 0 else None


def _tensor_item(index: Any, producer: str | None) -> tuple:
    """``("tensor", values)`` for a constant 1-D integer index whose values are readable (a
    buffer of a real model); ``("tensor",)`` with a reason otherwise."""
    if producer is not None:
        return ("tensor",)  # computed from an activation: its values change with the input
    if index is None:
        return ("tensor",)  # built on the meta device, or computed in forward: values unread
    if not isinstance(index, torch.Tensor):
        if isinstance(index, (list, tuple)) and all(isinstance(v, int) for v in index) \
                and 0 < len(index) <= MAX_INDEX_VALUES:
            return ("tensor", tuple(index))
        return ("tensor",)
    if index.device.type == "meta" or index.dim() != 1 or index.dtype.is_floating_point \
            or index.dtype == torch.bool or not 0 < index.numel() <= MAX_INDEX_VALUES:
        return ("tensor",)
    return ("tensor", tuple(int(v) for v in index.tolist()))


def _index_select_fn(call: OpCall) -> tuple[str, Attrs]:
    """``x.index_select(dim, idx)``: ``x[:, ..., idx]`` along ``dim``."""
    x = call.args[0]
    rank = x.dim()
    dim = int(call.get("dim")) % rank
    raw = call.bound_raw.get("index")
    item = _tensor_item(call.constant_value(raw), call.producer(raw))
    return "index", Attrs(extra={"index": (("slice", None, None, 1),) * dim + (item,),
                                 "rank": rank})


def _gather_fn(broadcasts: bool) -> Callable[[OpCall], tuple[str, Attrs]]:
    """``torch.gather`` / ``take_along_dim`` (``broadcasts``: its index may have size-1 dims)."""
    def attrs(call: OpCall) -> tuple[str, Attrs]:
        return _gather(call, broadcasts)
    return attrs


def _gather(call: OpCall, broadcasts: bool) -> tuple[str, Attrs]:
    """An index that is one 1-D list repeated over the other dims
    (``keep[None, :, None].expand(...)``) is an index_select; any other index is unknown."""
    key = "indices" if broadcasts else "index"
    x, index = call.args[0], call.constant_value(call.bound_raw.get(key))
    rank = x.dim()
    dim = int(call.get("dim")) % rank
    item: tuple = ("tensor",)
    if call.producer(call.bound_raw.get(key)) is None and isinstance(index, torch.Tensor) \
            and index.device.type != "meta" and index.dim() == rank:
        line = index.movedim(dim, -1).reshape(-1, index.shape[dim])
        if index.shape[dim] and bool((line == line[:1]).all()) and all(
                n == m or (broadcasts and n == 1)
                for k, (n, m) in enumerate(zip(index.shape, x.shape)) if k != dim):
            item = _tensor_item(line[0], None)
    return "index", Attrs(extra={"index": (("slice", None, None, 1),) * dim + (item,),
                                 "rank": rank})


def _permute_fn(call: OpCall) -> tuple[str, Attrs]:
    """permute / transpose / swapaxes / movedim / .mT, as one output->input dim map."""
    rank = call.input_rank()
    if rank is None:
        return "unknown", Attrs()
    name = getattr(call.target, "__name__", call.target)
    args = call.args[1:]
    kw = call.kwargs
    if name == "permute":
        dims = kw.get("dims", args[0] if len(args) == 1 else args)
        perm = tuple(int(d) % rank for d in _per_axis(dims, rank))
    elif name in ("movedim", "moveaxis"):
        src = [int(d) % rank for d in _per_axis(kw.get("source", args[0]), 1)]
        dst = [int(d) % rank for d in _per_axis(kw.get("destination", args[1]), 1)]
        rest = [d for d in range(rank) if d not in src]
        perm_list: list[int | None] = [None] * rank
        for s_, d_ in zip(src, dst):
            perm_list[d_] = s_
        it = iter(rest)
        perm = tuple(p if p is not None else next(it) for p in perm_list)
    else:  # transpose / swapaxes / swapdims
        d0 = int(kw.get("dim0", args[0] if args else -2)) % rank
        d1 = int(kw.get("dim1", args[1] if len(args) > 1 else -1)) % rank
        order = list(range(rank))
        order[d0], order[d1] = order[d1], order[d0]
        perm = tuple(order)
    return "permute", Attrs(extra={"perm": perm})


def _softmax_fn(call: OpCall) -> tuple[str, Attrs]:
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else None)
    if dim is None or not isinstance(dim, int):
        return "pointwise", Attrs()
    return "softmax", Attrs(axis=int(dim))


def _matmul_fn(call: OpCall) -> tuple[str, Attrs]:
    """``a @ b``; an operand that is no activation (a parameter) is recorded as the weight."""
    raws = list(call.raw_args[:2])
    acts = [call.producer(r) is not None for r in raws]
    extra: dict[str, Any] = {}
    if not all(acts):
        side = 0 if not acts[0] else 1
        w = call.args[side]
        extra["weight"] = {"slot": side, "shape": tuple(w.shape) if isinstance(w, torch.Tensor)
                           else None}
    return "matmul", Attrs(extra=extra)


def _einsum_fn(call: OpCall) -> tuple[str, Attrs]:
    equation = call.args[0]
    operands = call.args[1:]
    raws = call.raw_args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands, raws = operands[0], raws[0]
    if not isinstance(equation, str):
        return "unknown", Attrs()
    kinds = tuple("act" if call.producer(r) is not None else
                  tuple(o.shape) if isinstance(o, torch.Tensor) else None
                  for o, r in zip(operands, raws))
    return "einsum", Attrs(extra={"equation": equation.replace(" ", ""), "operands": kinds})


def _sdpa_fn(call: OpCall) -> tuple[str, Attrs]:
    return "attention", Attrs(extra={"seq_dim": -2})


def _expand_fn(call: OpCall) -> tuple[str, Attrs]:
    return "expand", Attrs()


def _roll_fn(call: OpCall) -> tuple[str, Attrs]:
    shifts = call.kwargs.get("shifts", call.args[1] if len(call.args) > 1 else None)
    dims = call.kwargs.get("dims", call.args[2] if len(call.args) > 2 else None)
    if dims is None:
        return "unknown", Attrs()
    return "roll", Attrs(extra={"shifts": tuple(int(s) for s in _per_axis(shifts, 1)),
                                "dims": tuple(int(d) for d in _per_axis(dims, 1))})


def _unbind_fn(call: OpCall) -> tuple[str, Attrs]:
    rank = call.input_rank()
    dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
    if rank is None:
        return "unknown", Attrs()
    return "split", Attrs(extra={"split_dim": int(dim) % rank, "unbind": True})


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)
