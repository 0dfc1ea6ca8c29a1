"""Batch locks in an ONNX file: ops that write a literal batch where the file's input batch is
symbolic.

The signal is the file itself: an input whose first dim is a ``dim_param`` (or has no
``dim_value``) says the batch is free. ONNX's own shape inference, with data propagation and the
batch kept as that symbol, then says where the symbol is lost:

- a ``Reshape`` whose data carries the batch symbol in dim 0 and whose output has a literal dim 0
  (``[1, C]``, ``[1, -1]``); ``[0, C]`` keeps the symbol and ``[-1, C]`` gets a fresh one, so
  neither is a lock;
- a ``Concat`` on a later axis of a batch-carrying tensor and a constant with a literal batch
  (a class token made by ``Expand``/``ConstantOfShape`` to ``[1, 1, C]``): located at that
  ``Expand``/``ConstantOfShape`` when one makes the literal, else at the ``Concat``.

A lock is only reported when no graph output downstream of it carries the batch symbol again (a
reshape to ``[1, N * C, H, W]`` and back is a trick, not a lock). Nothing here runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import shape_inference

from archlint.frontends.onnx.inference import _declared_shape, _inference_model
from archlint.frontends.onnx.node_table import NodeTable

#: ops that can write a literal batch into a constant that later meets the batch.
LITERAL_MAKERS = frozenset({"Expand", "ConstantOfShape", "Tile"})
#: ops a constant passes through unchanged in its batch dim on the way to the merge.
PASS_THROUGH = frozenset({"Cast", "Identity", "Unsqueeze", "Reshape", "Add", "Mul", "Sub", "Div"})


@dataclass(frozen=True)
class BatchLock:
    """One op that fixes the batch: the ONNX node name, its op type and the literal batch."""

    node: str
    op_type: str
    literal: int
    reason: str


def batch_symbols(graph: onnx.GraphProto, real_inputs: list[onnx.ValueInfoProto]) -> dict[str, str]:
    """Input name -> the symbol its batch dim is kept as, for the inputs whose batch is free."""
    out = {}
    for i, value in enumerate(real_inputs):
        declared = _declared_shape(value)
        if not declared or len(declared) < 2 or isinstance(declared[0], int):
            continue
        out[value.name] = declared[0] if isinstance(declared[0], str) else f"archlint_batch_{i}"
    return out


def find_batch_locks(
    model: onnx.ModelProto,
    table: NodeTable,
    symbols: dict[str, str],
    input_shapes: dict[str, tuple[int | str | None, ...]],
    activations: set[str],
    example_batch: int | None,
) -> list[BatchLock]:
    """Every batch lock (see the module docs); [] when inference with a symbolic batch fails."""
    if not symbols:
        return []
    shapes = {
        name: ((symbols[name], *shape[1:]) if name in symbols and shape else shape)
        for name, shape in input_shapes.items()
    }
    try:
        inferred = shape_inference.infer_shapes(
            table.serialized_with(_inference_model(model, None, shapes)), strict_mode=False,
            data_prop=True,
        )
    except Exception:
        return []  # no inference with the batch as a symbol: nothing known, nothing claimed
    dims = _dims_of(inferred.graph)
    nodes = table.pairs()
    batch = set(symbols.values())
    literals = {1} | ({example_batch} if example_batch else set())
    names = {id(node): node.name or f"{node.op_type}_{index}" for index, node in nodes}
    producer = {out: node for _, node in nodes for out in node.output if out}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for _, node in nodes:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    outputs = {o.name for o in model.graph.output}

    def head(tensor: str) -> int | str | None:
        shape = dims.get(tensor)
        return shape[0] if shape else None

    def restored(node: onnx.NodeProto) -> bool:
        seen, stack = set(), [o for o in node.output if o]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in outputs and head(t) in batch:
                return True
            for c in consumers.get(t, ()):
                stack.extend(o for o in c.output if o)
        return False

    locks = []
    for _, node in nodes:
        if node.op_type == "Reshape" and len(node.input) >= 2:
            before, after = head(node.input[0]), head(node.output[0])
            if before in batch and after in literals and not restored(node):
                locks.append(BatchLock(
                    names[id(node)], "Reshape", int(after),
                    f"Reshape to a literal batch {after} while the input batch is symbolic "
                    f"({before}): works only at batch {after}",
                ))
        elif node.op_type == "Concat":
            lock = _concat_lock(node, dims, batch, literals, producer, names, activations)
            if lock is not None and not restored(node):
                locks.append(lock)
    return locks


def _concat_lock(node, dims, batch, literals, producer, names, activations) -> BatchLock | None:
    ins = [t for t in node.input if t and dims.get(t)]
    if len(ins) < 2:
        return None
    rank = len(dims[ins[0]])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if rank < 2 or axis % rank == 0:
        return None  # concatenating along the batch itself adds samples; no lock
    carrier = next((dims[t][0] for t in ins if dims[t][0] in batch), None)
    # a constant's literal batch; an activation's is reported where it lost the batch
    fixed = next((t for t in ins if dims[t][0] in literals and t not in activations), None)
    if carrier is None or fixed is None:
        return None
    literal = int(dims[fixed][0])
    maker = _literal_maker(fixed, producer)
    what = f"a tensor of literal batch {literal} ({fixed!r})"
    if maker is not None:
        return BatchLock(
            names[id(maker)], maker.op_type, literal,
            f"{maker.op_type} to a literal batch {literal}, concatenated (at "
            f"{names[id(node)]!r}) with the input batch ({carrier}): works only at batch {literal}",
        )
    return BatchLock(
        names[id(node)], "Concat", literal,
        f"Concat of {what} with the input batch ({carrier}): works only at batch {literal}",
    )


def _literal_maker(tensor: str, producer: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The Expand/ConstantOfShape/Tile that wrote the literal batch, through ops that keep it."""
    for _ in range(8):
        node = producer.get(tensor)
        if node is None:
            return None
        if node.op_type in LITERAL_MAKERS:
            return node
        if node.op_type not in PASS_THROUGH or not node.input:
            return None
        tensor = node.input[0]
    return None


def _dims_of(graph: onnx.GraphProto) -> dict[str, tuple[int | str | None, ...]]:
    out = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shape = _declared_shape(value)
        if shape is not None:
            out[value.name] = shape
    return out
