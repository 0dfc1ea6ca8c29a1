"""``--show layers`` as a model summary: parameters and MACs against torchinfo, module-path
names, ``--depth`` folding, the failing op marked."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchinfo = pytest.importorskip("torchinfo")
from torch import nn  # noqa: E402

import archlint  # noqa: E402
from archlint.passes.costs import cost_pass  # noqa: E402
from archlint.reporters.layers import layer_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "fixtures" / "zoo"

# (file, model attribute): every reference architecture of the zoo
ZOO_MODELS = [
    ("resnet.py", "resnet18"), ("resnet.py", "resnet50"), ("resnet.py", "resnet50_v1"),
    ("vgg.py", "vgg16"), ("alexnet.py", "alexnet"), ("mobilenetv2.py", "mobilenet_v2"),
    ("senet.py", "small_senet"), ("unet.py", "unet"), ("dcgan.py", "dcgan_generator"),
    ("dcgan_discriminator.py", "dcgan_discriminator"), ("deeplab.py", "deeplab"),
]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"zoo_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchinfo(model: nn.Module, shape) -> torchinfo.model_statistics.ModelStatistics:
    # torchinfo runs a forward pass with hooks; on the meta device it allocates nothing
    return torchinfo.summary(model, input_data=torch.empty(*shape, device="meta"), device="meta",
                             verbose=0)


@pytest.mark.parametrize("file,name", ZOO_MODELS, ids=[n for _, n in ZOO_MODELS])
def test_params_and_macs_equal_torchinfo_on_the_zoo(file, name):
    report = archlint.lint(ZOO / file, model=name)
    (model,) = report.models
    totals = cost_pass(model.graph)
    with torch.device("meta"):
        module = getattr(_load(ZOO / file), name)()
    stats = _torchinfo(module, model.input_shapes[0])
    assert totals.params == stats.total_params
    assert totals.trainable == stats.trainable_params
    assert totals.macs == stats.total_mult_adds
    assert totals.unattributed == 0
    # the rows add up to the totals
    rows = layer_rows(model)
    assert sum(r.params for r in rows) == totals.params
    assert sum(r.macs for r in rows) == totals.macs


class _Frozen(nn.Module):
    """A frozen backbone conv, a shared (twice-called) conv, and a trainable head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.backbone.requires_grad_(False)
        self.shared = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.shared(self.shared(self.backbone(x)))
        return self.head(self.norm(x).mean((2, 3)))


def test_frozen_and_shared_parameters_count_as_torchinfo_counts_them():
    module = _Frozen()
    report = archlint.lint(module, example_inputs=torch.empty(2, 3, 16, 16, device="meta"))
    totals = cost_pass(report.models[0].graph)
    stats = torchinfo.summary(module, input_size=(2, 3, 16, 16), verbose=0)
    assert (totals.params, totals.trainable, totals.macs) == (
        stats.total_params, stats.trainable_params, stats.total_mult_adds)
    assert totals.frozen == 3 * 8 * 9 + 8
    rows = {r.name: r for r in layer_rows(report.models[0])}
    assert rows["backbone"].params == 224
    assert rows["head"].macs == 2 * (8 * 5 + 5)  # once per sample


def test_onnx_counts_a_shared_initializer_once():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    w = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x" if i == 0 else f"c{i - 1}", "w"], [f"c{i}"], name=f"c{i}",
                              pads=[1, 1, 1, 1]) for i in range(5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("c4", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shared.onnx"
        onnx.save(model, str(path))
        totals = cost_pass(archlint.lint(path).models[0].graph)
    assert totals.params == 144  # one 4x4x3x3 weight, read by five convs
    assert totals.macs == 5 * 144 * 64  # ...applied by each at every output position


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archlint", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_show_layers_uses_module_paths_and_marks_the_failing_op():
    out = _cli("examples/segmenter.py", "--show", "layers").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert "stem.2" in rows and "stem_2" not in rows  # the names findings use
    assert rows["stem.2"][5] == "9,248"  # 32*32*9 + 32
    assert rows["\u2717"][1] == "cat"  # shape propagation fails at the cat
    assert "Total params: 164,133 (trainable 164,133, frozen 0)" in out
    assert "Total MACs: ?" in out  # past the failing cat the shapes, hence the MACs, are unknown


def test_depth_folds_modules_and_keeps_the_totals():
    out = _cli("fixtures/zoo/resnet.py", "--model", "resnet50", "--show", "layers", "--depth", "1").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert [rows[f"layer{i}"][1] for i in range(1, 5)] == ["module"] * 4
    assert rows["layer4"][2:5] == ["(32", "ops)", "1x2048x7x7"]  # a module shows its last op's output
    assert rows["layer1"][7] == "215,808"
    assert "Total params: 25,557,032 (trainable 25,557,032, frozen 0)" in out
    assert "Total MACs: 4,089,238,376 (4.09G)" in out
    assert not any(name.startswith("layer1.") for name in rows)
