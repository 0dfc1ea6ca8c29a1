"""The ONNX frontend: an ``.onnx`` file (or a ``ModelProto``) -> the IR graph.

It never imports torch. Shapes come from ONNX's own strict shape inference (with data
propagation, because the model zoo builds its weights with ``ConstantOfShape``); where strict
inference fails, a node-by-node pass finds the failing node, records its one-line reason there and
keeps everything upstream.

What becomes an IR node: every ONNX node that reads at least one *activation* (a tensor derived
from a real graph input). Initializers, ``Constant`` nodes and everything computed only from them
or from ``Shape``/``Size`` are *static*: weights and shape arithmetic, resolved here into attrs
(a Reshape target, Pad amounts, Resize scales) and never IR nodes.

Safety: the model is loaded with ``load_external_data=False`` and no external-data reference is
ever followed; only small, embedded tensors are turned into numpy arrays, so a tensor that declares
2 GB is never allocated.

Files:


``loading``     load without external data (a reference outside the model folder is reported,
                never opened), header checks, topological order;
``node_table``  every node's fields read off the protos once, for the scans and the builder;
``inference``   the example input (declared or assumed), shape inference;
``static_values`` weights and shape arithmetic, evaluated on demand when small;
``value_types`` types and shapes read from value infos (what inference wrote);
``op_mapping``  one ONNX node -> op kind and Attrs;
``geometry``    per-op window/padding formulas as ONNX defines them;
``batch_lock``  ops that write a literal batch where the file's input batch is symbolic;
``builder``     the IR graph.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import shape_inference  # noqa: F401  (tests patch it through this module)

from archlint.config import Options
from archlint.frontends import Capture, TargetError
from archlint.frontends.onnx.batch_lock import batch_symbols, find_batch_locks
from archlint.frontends.onnx.builder import _GraphBuilder
from archlint.frontends.onnx.geometry import _concrete, _one_line
from archlint.frontends.onnx.inference import (
    _activation_tensors,
    _infer_tensors,
    _inference_model,
    _input_shapes,
)
from archlint.frontends.onnx.loading import (
    _check_header,
    _load,
    _sorted_nodes,
    external_data_outside,
    file_mentions,
)

__all__ = ["capture_file", "capture_model"]


# ---------------------------------------------------------------------------------------------
# entry points


def capture_file(path: Path, options: Options) -> list[Capture]:
    """Load ``path`` (never its external data) and capture its one graph.

    Raises :class:`TargetError` with a one-line reason for a file that is not a usable model.
    """
    path = Path(path)
    model = _load(path)
    capture = _capture(model, options, name=path.stem, file=str(path))
    # an external reference outside the folder needs a "location" entry: a file whose bytes
    # never say "location" has none, and the walk over every node's attributes is skipped
    if file_mentions(path, b"location"):
        capture.notes[:0] = external_data_outside(model, path.parent)
    return [capture]


def capture_model(model: onnx.ModelProto, options: Options) -> Capture:
    """Capture an in-memory ``ModelProto``; a model that cannot be analyzed gives ``error``."""
    name = model.graph.name or "model"
    try:
        return _capture(model, options, name=name, file=None)
    except TargetError as exc:
        return Capture(name=name, graph=None, error=str(exc))


def _capture(model: onnx.ModelProto, options: Options, *, name: str, file: str | None) -> Capture:
    try:
        return _capture_checked(model, options, name=name, file=file)
    except TargetError:
        raise
    except Exception as exc:  # a malformed proto must give one line, never a traceback
        raise TargetError(
            f"cannot build a graph from this ONNX model ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _capture_checked(model: onnx.ModelProto, options: Options, *, name: str, file: str | None) -> Capture:
    _check_header(model)
    table = _sorted_nodes(model.graph)
    notes: list[str] = []
    real_inputs, input_shapes, assumed = _input_shapes(model.graph, options, notes)
    inference_model = _inference_model(model, None, input_shapes)  # the table adds the nodes
    activations = _activation_tensors(table, [i.name for i in real_inputs])
    tensors = _infer_tensors(inference_model, table, activations, notes)
    builder = _GraphBuilder(model, table, tensors, name=name, file=file, notes=notes)
    g = builder.build(real_inputs)
    # static values and tensors point at each other: break the cycle, so the inferred model
    # they hold is freed now (the console entry runs without cyclic GC)
    tensors.static = None
    g.graph["input_shapes"] = [s for s in input_shapes.values() if _concrete(s)]
    g.graph["input_assumed"] = assumed
    symbols = batch_symbols(model.graph, real_inputs)
    g.graph["input_batch_symbolic"] = bool(symbols)
    example_batch = next((s[0] for s in g.graph["input_shapes"] if s), None)
    g.graph["batch_locks"] = find_batch_locks(
        model, table, symbols, input_shapes, activations, example_batch
    )
    return Capture(name=name, graph=g, notes=notes)
