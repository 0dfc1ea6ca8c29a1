"""Confirming on onnxruntime (never torch)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from archlint.confirm.confirmer import _Confirmer
from archlint.confirm.predictions import (
    MAX_PROBE_PIXELS,
    RFProbe,
    Run,
    _one_line,
    differing_spatial,
    last_spatial_node,
)
from archlint.graph import ELEMENTWISE_MERGES

if TYPE_CHECKING:
    import networkx as nx




class _OnnxConfirmer(_Confirmer):
    def __init__(self, g: "nx.DiGraph") -> None:
        import numpy as np
        import onnx

        self.np, self.onnx, self.g = np, onnx, g
        self.model = _onnx_model(g, onnx)
        #: ONNX tensor name -> the IR node that produces it.
        self.producers: dict[str, str] = {}
        for index, node in enumerate(self.model.graph.node):
            # The frontend names an unnamed node '<op_type>_<index in the file>'.
            ir = next((c for c in (node.name or f"{node.op_type}_{index}", *node.output)
                       if c and c in g), None)
            if ir is not None:
                for i, out in enumerate(node.output):
                    self.producers.setdefault(out, ir)
        for value in self.model.graph.input:
            if value.name in g:
                self.producers[value.name] = value.name
        self.rng = np.random.default_rng(0)

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        import onnxruntime as ort

        np = self.np
        run = Run(input_shapes=list(input_shapes))
        model = self._runnable(resized=input_shapes != self.example_shapes)
        names = [o.name for o in model.graph.output]
        inputs = [v for v in model.graph.input if v.name not in _initializer_names(model)]
        feeds = {
            v.name: self.rng.standard_normal(shape).astype(_np_dtype(v, np))
            for v, shape in zip(inputs, input_shapes)
        }
        try:
            session = ort.InferenceSession(model.SerializeToString(), _quiet_session(ort),
                                           providers=["CPUExecutionProvider"])
            values = session.run(names, feeds)
        except Exception as exc:
            run.error = _ort_reason(exc)
            run.error_node = self._failed_node(str(exc))
            return run
        by_name = {n: tuple(np.shape(v)) for n, v in zip(names, values)}
        for out, ir in self.producers.items():
            if out in by_name:
                run.shapes[ir] = run.shapes.get(ir, ()) + (by_name[out],)
        for node in model.graph.node:
            ir = self.producers.get(node.output[0]) if node.output else None
            if ir is None:
                continue
            operands = [by_name[i] for i in node.input if i in by_name]
            run.operands[ir] = operands
            if self.g.nodes[ir]["op"] in ELEMENTWISE_MERGES and differing_spatial(operands):
                run.broadcasts[ir] = operands
        del values
        return run

    def _runnable(self, resized: bool) -> Any:
        """The model with every intermediate tensor as an output, random weights where the file
        keeps them outside, and (``resized``) symbolic spatial input sizes."""
        onnx = self.onnx
        model = copy.deepcopy(self.model)
        for init in model.graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                array = self.rng.standard_normal(tuple(init.dims)).astype(
                    onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
                init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
        initializers = _initializer_names(model)
        if resized:
            del model.graph.value_info[:]
            for value in model.graph.input:
                if value.name in initializers:
                    continue
                dims = value.type.tensor_type.shape.dim
                for axis, dim in enumerate(dims):
                    dim.Clear()
                    dim.dim_param = f"archlint_{value.name}_{axis}"
        present = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for out in node.output:
                if out and out not in present:
                    model.graph.output.append(onnx.ValueInfoProto(name=out))
                    present.add(out)
        return model

    def _failed_node(self, message: str) -> str | None:
        import re

        m = re.search(r"Name:'([^']*)'", message) or re.search(r"[Nn]ode \(([^)]*)\)", message)
        if not m:
            return None
        for node in self.model.graph.node:
            if node.name == m.group(1):
                return next((self.producers[o] for o in node.output if o in self.producers), None)
        return m.group(1) if m.group(1) in self.g else None

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        """The output of a one-node ConvTranspose model, weights 1, on ones (onnxruntime)."""
        import onnxruntime as ort

        onnx, np = self.onnx, self.np
        helper = onnx.helper
        layer = helper.make_node(
            "ConvTranspose", ["x", "w"], ["y"], kernel_shape=list(kernel), strides=list(stride),
            dilations=list(dilation), output_padding=list(output_padding),
            pads=list(padding) * 2,
        )
        # float32: onnxruntime has no double ConvTranspose, and small tap counts are exact.
        weight = onnx.numpy_helper.from_array(np.ones((1, 1, *kernel), np.float32), "w")
        graph = helper.make_graph(
            [layer], "checkerboard",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, *lengths])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            initializer=[weight],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = ort.InferenceSession(model.SerializeToString(), _quiet_session(ort),
                                       providers=["CPUExecutionProvider"])
        (out,) = session.run(["y"], {"x": np.ones((1, 1, *lengths), np.float32)})
        return out[0, 0]

    def confirm_rf(self, max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any] | None:
        last = last_spatial_node(self.g)
        if last is None:
            return None
        return {"node": last, "status": "not-checked",
                "note": "onnxruntime runs no backward pass, so ONNX fields are not measured"}

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        return self.confirm_rf() or {}


def _onnx_model(g: "nx.DiGraph", onnx: Any) -> Any:
    model = g.graph.get("onnx_model")
    if model is not None:
        return model
    target = g.graph.get("target")
    if not target:
        raise RuntimeError("the graph carries neither the ONNX model nor its file")
    return onnx.load(target, load_external_data=False)


def _quiet_session(ort: Any) -> Any:
    """Session options that keep onnxruntime's own error log off the user's terminal."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return options


def _ort_reason(exc: BaseException) -> str:
    """The useful part of an onnxruntime error: the op and its status message."""
    import re

    text = " ".join(str(exc).split())
    m = re.search(r"while running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text)
    if not m:
        return _one_line(exc)
    message = m.group(3)
    # drop the source location and the failed C++ assertion in front of the real reason
    message = re.sub(r"^\S+:\d+ .*? was false\. ", "", message)
    return f"{m.group(1)} {m.group(2)!r}: {message}"


def _initializer_names(model: Any) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _np_dtype(value: Any, np: Any) -> Any:
    import onnx

    elem = value.type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else np.float32
