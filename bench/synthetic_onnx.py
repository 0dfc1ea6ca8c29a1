"""Synthetic ONNX graphs of any size: a residual chain of Conv -> Relu -> Add blocks.

Each block reads ``x``, convolves it (3x3, padding 1, so the shape never changes), applies Relu
and adds ``x`` back: a merge per block, like a ResNet, which gives every pass real work (shapes,
receptive fields that grow block by block, alignment checks at every Add). All convolutions read
one shared 4x4x3x3 initializer, so a 100k-node file stays a few MB: the size is in the graph,
not the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

CHANNELS = 4
SPATIAL = 16
OPSET = 17


def residual_chain(nodes: int, channels: int = CHANNELS, spatial: int = SPATIAL) -> onnx.ModelProto:
    """A model with exactly ``nodes`` ONNX nodes (blocks of 3, topped up with Relu)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    weight = numpy_helper.from_array(
        np.full((channels, channels, 3, 3), 0.01, dtype=np.float32), name="shared_weight"
    )
    graph_nodes = []
    current = "input"
    blocks, extra_relus = divmod(nodes, 3)
    for i in range(blocks):
        conv, relu, add = f"b{i}_conv", f"b{i}_relu", f"b{i}_add"
        graph_nodes += [
            helper.make_node("Conv", [current, "shared_weight"], [conv], name=conv,
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [conv], [relu], name=relu),
            helper.make_node("Add", [current, relu], [add], name=add),
        ]
        current = add
    for i in range(extra_relus):
        name = f"tail{i}_relu"
        graph_nodes.append(helper.make_node("Relu", [current], [name], name=name))
        current = name
    shape = [1, channels, spatial, spatial]
    graph = helper.make_graph(
        graph_nodes,
        f"residual_chain_{nodes}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, shape)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def write_residual_chain(directory: Path, nodes: int) -> Path:
    """Write the ``nodes``-node chain under ``directory`` (once) and return its path."""
    path = Path(directory) / f"residual_chain_{nodes}.onnx"
    if not path.exists():
        import onnx

        model = residual_chain(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return path


def write_in_subprocess(directory: Path, sizes: list[int]) -> dict[int, Path]:
    """Write the chains from a separate process, so the harness never imports onnx or numpy.

    A benchmark parent should stay small: see harness.run_process on inherited peak RSS.
    """
    import subprocess
    import sys

    subprocess.run([sys.executable, __file__, str(directory), *map(str, sizes)], check=True,
                   stdout=subprocess.DEVNULL)
    return {n: Path(directory) / f"residual_chain_{n}.onnx" for n in sizes}


if __name__ == "__main__":
    import sys

    for count in sys.argv[2:]:
        print(write_residual_chain(Path(sys.argv[1]), int(count)))
