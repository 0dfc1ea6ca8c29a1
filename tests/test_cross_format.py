"""Cross-format consistency: a zoo model and its ONNX export give archlint the same answers.

Each zoo model is built on the CPU, exported with the TorchScript exporter (``dynamo=False``,
opset 17, the working path in torch 2.13 here) and linted twice: as the ``.py`` file through the
torch frontend, and as the ``.onnx`` file through the ONNX frontend. Both graphs must agree on

1. the final output shape;
2. the output shapes of the convolutions and of the pools, in topological order (the exporter
   keeps every conv and pool, in the same order; BatchNorm is folded into the conv in eval
   mode, which changes no shape), and of the adds and concats as multisets (the order of two
   independent branches is the exporter's choice);
3. the receptive field (size, stride) per axis at the last windowed op before the head;
4. the rule ids reported at each severity.

Small input sizes keep it fast; each is admissible (``python -m archlint sizes``).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from archlint.api import lint
from archlint.graph import WINDOWED, ops, output_shape

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

ZOO = Path(__file__).resolve().parent.parent / "fixtures" / "zoo"
OPSET = 17
POOLS = frozenset({"max_pool", "avg_pool", "lp_pool", "adaptive_pool", "global_pool"})
CONVS = frozenset({"conv", "conv_transpose"})
MERGES = frozenset({"add", "concat"})


@dataclass(frozen=True)
class Case:
    stem: str
    factory: str
    shape: tuple[int, ...]
    #: rule ids only the export fires, per severity, each for a reason given where the case is
    #: listed: never an engine difference, always a fact the exporter baked into the file
    onnx_only: tuple[tuple[str, frozenset[str]], ...] = ()

    def __str__(self) -> str:
        return f"{self.factory}-{'x'.join(map(str, self.shape[2:]))}"


CASES = [
    Case("resnet", "resnet18", (1, 3, 64, 64)),
    Case("resnet", "resnet50", (1, 3, 64, 64)),
    Case("mobilenetv2", "mobilenet_v2", (1, 3, 96, 96)),
    Case("mobilenetv2", "mobilenet_v2", (1, 3, 224, 224)),
    Case("senet", "small_senet", (1, 3, 32, 32)),
    Case("unet", "unet", (1, 3, 64, 64)),
    Case("dcgan", "dcgan_generator", (1, 100, 1, 1)),
    Case("dcgan_discriminator", "dcgan_discriminator", (1, 3, 64, 64)),
    # DeepLab resizes to ``x.shape[2:]``. The TorchScript exporter traces at one input size and
    # constant-folds those sizes into the Resize targets (5x5 in ASPP's image pooling, 65x65 for
    # the logits), so the exported file really works only for inputs of 65..80 (those reach 5x5
    # at stride 16), and the ONNX side rightly adds an input-size-constraints note. The .py
    # model follows any input size, so the torch side has none.
    Case("deeplab", "deeplab", (1, 3, 65, 65),
         (("info", frozenset({"input-size-constraints"})),)),
    # AlexNet (61M parameters, a 240 MB file, ~4 s) stands for VGG-16 too (138M, ~13 s): the same
    # AdaptiveAvgPool2d -> flatten -> Linear head. Only 224 exports: the exporter cannot write an
    # adaptive pool whose output size does not divide its input (5x5 -> 6x6 at 192, say). At 224
    # it writes AdaptiveAvgPool2d(6) on a 6x6 map as a fixed 1x1 AveragePool, so the exported
    # Gemm takes 9216 features only for inputs of 223..254: the ONNX side rightly warns
    # hardcoded-flatten and notes input-size-constraints; the .py model (any n >= 63) does not.
    Case("alexnet", "alexnet", (1, 3, 224, 224),
         (("warning", frozenset({"hardcoded-flatten"})),
          ("info", frozenset({"input-size-constraints"})))),
]


def zoo_module(stem: str):
    name = f"_cross_format_zoo_{stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ZOO / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def export(case: Case, path: Path) -> None:
    torch.manual_seed(0)
    model = getattr(zoo_module(case.stem), case.factory)().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(case.shape),), str(path), dynamo=False,
                          opset_version=OPSET, input_names=["x"])


@pytest.fixture(scope="module", params=CASES, ids=str)
def reports(request, tmp_path_factory):
    case: Case = request.param
    onnx_path = tmp_path_factory.mktemp(str(case)) / f"{case.factory}.onnx"
    export(case, onnx_path)
    from_torch = lint(ZOO / f"{case.stem}.py", model=case.factory, input_shapes=(case.shape,))
    from_onnx = lint(onnx_path)
    (torch_model,) = from_torch.models
    (onnx_model,) = from_onnx.models
    onnx_path.unlink()  # the VGG and AlexNet files are ~500 MB: free the disk at once
    assert torch_model.error is None, torch_model.error
    assert onnx_model.error is None, onnx_model.error
    return torch_model, onnx_model, case


def shapes_of(g, kinds) -> list[tuple[int, ...]]:
    return [output_shape(g, n) for n in ops(g) if g.nodes[n]["op"] in kinds]


def final_output_shape(g) -> tuple[int, ...]:
    outputs = [n for n in ops(g) if g.nodes[n]["op"] == "output"]
    assert len(outputs) == 1
    return output_shape(g, outputs[0])


def last_spatial_rf(g) -> tuple[tuple[int, object], ...]:
    """(size, stride) per axis at the last windowed op whose field is known and local."""
    last = [n for n in ops(g) if g.nodes[n]["op"] in WINDOWED
            and g.nodes[n].get("rf") and all(g.nodes[n]["rf"])]
    assert last, "no windowed op with a known receptive field"
    return tuple((rf.size, rf.stride) for rf in g.nodes[last[-1]]["rf"])


def rule_ids(model, severity: str) -> set[str]:
    return {f.rule for f in model.findings if f.severity.value == severity}


def test_final_output_shape_agrees(reports):
    torch_model, onnx_model, _ = reports
    assert final_output_shape(onnx_model.graph) == final_output_shape(torch_model.graph)


def test_input_shape_agrees(reports):
    torch_model, onnx_model, _ = reports
    assert onnx_model.input_shapes == torch_model.input_shapes


def test_conv_output_shapes_agree_in_order(reports):
    torch_model, onnx_model, _ = reports
    expected = shapes_of(torch_model.graph, CONVS)
    assert expected, "the model has convolutions"
    assert shapes_of(onnx_model.graph, CONVS) == expected


def test_pool_output_shapes_agree_in_order(reports):
    torch_model, onnx_model, _ = reports
    assert shapes_of(onnx_model.graph, POOLS) == shapes_of(torch_model.graph, POOLS)


def test_merge_output_shapes_agree_as_multisets(reports):
    torch_model, onnx_model, _ = reports
    for kind in MERGES:
        assert (Counter(shapes_of(onnx_model.graph, {kind}))
                == Counter(shapes_of(torch_model.graph, {kind}))), kind


def test_receptive_field_at_the_last_windowed_op_agrees(reports):
    torch_model, onnx_model, _ = reports
    assert last_spatial_rf(onnx_model.graph) == last_spatial_rf(torch_model.graph)


@pytest.mark.parametrize("severity", ["error", "warning", "info"])
def test_rule_ids_agree(reports, severity):
    torch_model, onnx_model, case = reports
    expected = rule_ids(torch_model, severity) | dict(case.onnx_only).get(severity, frozenset())
    assert rule_ids(onnx_model, severity) == expected
