"""Differential test of the ONNX path: archlint on an exported model against ONNX Runtime.

Random CNNs from tests/archgen.py that run in PyTorch are exported (TorchScript exporter,
``dynamo=False``, opset 17: in torch 2.13 the dynamo exporter takes seconds per model and rewrites
opset 17 requests to 18). Every node output is added as a graph output of a copy of the model, and
ONNX Runtime's real output shapes are the truth: ``archlint.api.lint(model.onnx)`` must analyze the
model, report no error, and give every IR node (named after its ONNX node) the shape ONNX Runtime
produced for that node's first output.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings

import archgen
from archlint.api import lint
from archlint.findings import Severity

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

OPSET = 17
_module_names = (f"_differential_onnx_model_{i}" for i in itertools.count())


def export(model, shape: tuple[int, ...], path: Path) -> bool:
    """Export with the TorchScript exporter; False when the exporter itself cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(shape),), str(path), dynamo=False,
                              opset_version=OPSET, input_names=["x"])
    except Exception:  # an exporter limitation says nothing about archlint
        return False
    return True


def runtime_shapes(path: Path, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | str:
    """ONNX Runtime's shape of every node output, by tensor name; or why it failed (one line)."""
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    present = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in present and name in types:
                model.graph.output.append(onnx.ValueInfoProto(name=name, type=types[name]))
                present.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is returned, not logged
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {"x": np.zeros(shape, np.float32)})
    except Exception as exc:  # ONNX Runtime refusing the model is part of the truth
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {n: tuple(np.asarray(v).shape) for n, v in zip(names, values)}


def onnx_disagreements(path: Path, shape: tuple[int, ...]) -> list[str]:
    real = runtime_shapes(path, shape)
    first_output = {n.name: n.output[0] for n in onnx.load(str(path)).graph.node}
    (report,) = lint(path).models
    errors = [f for f in report.findings
              if f.severity is Severity.ERROR and f.rule not in archgen.NOT_RUNTIME_ERRORS]
    if isinstance(real, str):
        if report.error is None and not errors:
            return [f"ONNX Runtime fails ({real}); archlint reports no error"]
        return []
    if report.error is not None:
        return [f"archlint could not analyze a model ONNX Runtime runs: {report.error}"]
    problems = [f"false error [{f.rule}] at {f.location.node}: {f.message}" for f in errors]
    g = report.graph
    checked = 0
    for n in g.nodes:
        tensor = first_output.get(n)
        if tensor is None or tensor not in real:
            continue
        predicted = g.nodes[n]["shapes"]
        checked += 1
        if not predicted or predicted[0] != real[tensor]:
            problems.append(f"{n} ({g.nodes[n]['op']}): archlint {predicted and predicted[0]}, "
                            f"ONNX Runtime {real[tensor]}")
    if not checked:
        problems.append("no IR node matched an ONNX node by name")
    return problems


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(arch=archgen.architectures(max_blocks=3))
def test_onnx_path_agrees_with_onnxruntime(arch, tmp_path_factory):
    folder = tmp_path_factory.mktemp("differential_onnx")
    source = archgen.write_model(arch, folder)
    module = archgen.load_module(source, next(_module_names))
    model, _ = archgen.build(getattr(module, archgen.MODEL_CLASS))
    assume(model is not None)
    truth = archgen.real_run(None, arch.input_shape, model)
    assume(not truth.fails)
    path = folder / "model.onnx"
    assume(export(model, arch.input_shape, path))
    problems = onnx_disagreements(path, arch.input_shape)
    assert not problems, "archlint (ONNX) disagrees with ONNX Runtime:\n  " + "\n  ".join(
        problems) + f"\n--- source of the exported model ---\n{source.read_text()}"


REGRESSIONS = Path(__file__).resolve().parents[1] / "fixtures" / "regressions"


@pytest.mark.parametrize("source", sorted(REGRESSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_onnx_regression_fixture(source, tmp_path):
    """The regression models that run in PyTorch and export, through the ONNX path."""
    module = archgen.load_module(source, next(_module_names))
    model, _ = archgen.build(getattr(module, archgen.MODEL_CLASS))
    shape = tuple(module.example_input.shape)
    if model is None or archgen.real_run(None, shape, model).fails:
        pytest.skip("PyTorch itself fails on this model: nothing to export")
    path = tmp_path / "model.onnx"
    if not export(model, shape, path):
        pytest.skip("the exporter cannot export this model")
    problems = onnx_disagreements(path, shape)
    assert not problems, "\n".join(problems)
