"""--confirm: running the model marks each prediction confirmed or refuted.

The unit tests build the IR by hand from a torch.fx trace (shapes from a real forward), so they
check confirm against what PyTorch does without depending on the frontend or the rules. The
integration tests at the bottom run the real pipeline (``lint`` then ``confirm_report``) on the
fixtures and the zoo, and skip until those pieces exist.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from archlint import confirm as C  # noqa: E402
from archlint.config import ConfigError  # noqa: E402
from archlint.findings import Finding, ModelReport, Severity  # noqa: E402
from archlint.graph import Attrs, Location, add_op, new_graph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# A tiny hand-built frontend: fx trace + real shapes -> IR, with the graph keys confirm reads
# ---------------------------------------------------------------------------------------------

_MODULE_OPS = {
    nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv_transpose", nn.ConvTranspose2d: "conv_transpose",
    nn.MaxPool2d: "max_pool", nn.AvgPool2d: "avg_pool", nn.Linear: "linear",
    nn.BatchNorm2d: "norm", nn.ReLU: "pointwise", nn.Flatten: "flatten",
    nn.AdaptiveAvgPool2d: "adaptive_pool",
}
_FUNCTION_OPS = {"add": "add", "mul": "mul", "cat": "concat", "flatten": "flatten",
                 "relu": "pointwise"}


class _Rf:
    """An ``rf`` fact as the receptive-field pass writes it (size and stride per axis)."""

    def __init__(self, size, stride):
        self.size, self.stride = tuple(size), tuple(stride)


def _rf_of(attrs: Attrs, op: str, rf: _Rf) -> _Rf | None:
    if op in ("conv", "max_pool", "avg_pool"):
        size = tuple(r + (d * (k - 1)) * s for r, k, d, s in
                     zip(rf.size, attrs.kernel, attrs.dilation or (1,) * len(rf.size), rf.stride))
        return _Rf(size, tuple(s * st for s, st in zip(rf.stride, attrs.stride)))
    if op in ("norm", "pointwise"):
        return rf
    return None


def hand_graph(module_factory, input_shape, *, name="model", sizes=None):
    """IR for ``module_factory()`` traced by fx, with real shapes at ``input_shape``."""
    module = module_factory().eval()
    gm = torch.fx.symbolic_trace(module)
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(torch.zeros(input_shape))
    g = new_graph(name, None, "torch")
    fx_names, rfs = {}, {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            op, attrs = "input", Attrs()
        elif n.op == "output":
            op, attrs = "output", Attrs()
        elif n.op == "call_module":
            sub = gm.get_submodule(n.target)
            op = _MODULE_OPS.get(type(sub), "unknown")
            attrs = _attrs_of(sub)
        else:
            op, attrs = _FUNCTION_OPS.get(getattr(n.target, "__name__", str(n.target)), "unknown"), Attrs()
        inputs = [a.name for a in n.all_input_nodes]
        meta = n.meta.get("tensor_meta")
        metas = [meta] if hasattr(meta, "shape") else list(meta or [])
        add_op(g, n.name, op, inputs=inputs, attrs=attrs,
               shapes=tuple(tuple(m.shape) for m in metas) or None,
               location=Location("model.py", 10, n.target if n.op == "call_module" else n.name))
        fx_names[n.name] = n.name
        if op == "input":
            rfs[n.name] = _Rf((1,) * (len(input_shape) - 2), (1,) * (len(input_shape) - 2))
        elif inputs and inputs[0] in rfs and rfs[inputs[0]] is not None and op != "output":
            rfs[n.name] = _rf_of(attrs, op, rfs[inputs[0]])
        if rfs.get(n.name) is not None:
            g.nodes[n.name]["rf"] = rfs[n.name]
    g.graph.update(module_factory=module_factory, fx_names=fx_names,
                   input_shapes=[tuple(input_shape)], sizes=sizes)
    return g


def _attrs_of(sub) -> Attrs:
    if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d, nn.ConvTranspose1d, nn.Conv1d)):
        return Attrs(kernel=sub.kernel_size, stride=sub.stride, dilation=sub.dilation,
                     padding=tuple((p, p) for p in sub.padding),
                     output_padding=tuple(sub.output_padding))
    if isinstance(sub, (nn.MaxPool2d, nn.AvgPool2d)):
        k = (sub.kernel_size,) * 2 if isinstance(sub.kernel_size, int) else sub.kernel_size
        s = (sub.stride,) * 2 if isinstance(sub.stride, int) else sub.stride
        return Attrs(kernel=k, stride=s, dilation=(1, 1))
    return Attrs()


def report_for(g, *findings) -> ModelReport:
    return ModelReport(target="model.py", frontend=g.graph.get("frontend", "torch"),
                       model=g.graph["name"], graph=g, findings=list(findings))


def finding(rule: str, node: str, g) -> Finding:
    return Finding(rule=rule, code="AL0", severity=Severity.WARNING, message="m",
                   location=g.nodes[node]["location"])


class _Sweep:
    """A SizeSweep as archlint/passes/sizes.py writes it: square sides, masks over them."""

    def __init__(self, sizes, admissible, invalid):
        self.sizes, self.admissible, self._invalid = list(sizes), list(admissible), invalid

    def invalid_at(self, node):
        return self._invalid.get(node, [False] * len(self.sizes))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class SkipMismatch(nn.Module):
    """A stride-2 branch added to the identity: 8x8 works, 9x9 gives 5x5 + 9x9."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)

    def forward(self, x):
        return self.up(self.down(x)) + x


class HardcodedFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


class Checkerboard(nn.Module):
    def __init__(self, kernel=3, stride=2, padding=1):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, kernel, stride=stride, padding=padding)

    def forward(self, x):
        return self.up(x)


class OddStride(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(x)


class Plain(nn.Module):
    """conv3 -> relu -> maxpool2 -> conv3 (dilation 2) -> bn: RF 3 + 1 + 2*4 = 12."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.r = nn.ReLU()
        self.p = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.c2(self.p(self.r(self.c1(x)))))


# ---------------------------------------------------------------------------------------------
# Unit tests on hand-built graphs
# ---------------------------------------------------------------------------------------------


def test_import_does_not_import_torch():
    import subprocess
    import sys

    code = "import archlint.confirm, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("device,reason", [
    ("cuda", "no CUDA GPU"),
    ("cuda:3", "no CUDA GPU"),
    ("gpu", "not a device name"),
    ("meta", "computes values"),
    ("mps", "MPS"),
])
def test_missing_device_raises_config_error(device, reason):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ConfigError, match=reason) as info:
        C.check_device(device)
    assert "\n" not in str(info.value)


def test_cpu_device_is_accepted():
    C.check_device("cpu")


def test_confirm_report_checks_the_device_first():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    g = hand_graph(OddStride, (1, 1, 8, 8))
    with pytest.raises(ConfigError):
        C.confirm_report(report_for(g), device="cuda")


def test_shapes_match_and_are_all_compared():
    g = hand_graph(Plain, (1, 1, 16, 16))
    report = report_for(g)
    C.confirm_report(report)
    assert report.confirm["device"] == "cpu"
    assert report.confirm["shape_mismatches"] == 0
    assert report.confirm["shapes_compared"] == g.number_of_nodes()
    assert report.confirm["seconds"] >= 0


def test_a_wrong_prediction_is_reported_as_an_archlint_bug():
    g = hand_graph(Plain, (1, 1, 16, 16))
    g.nodes["p"]["shapes"] = ((1, 4, 9, 9),)
    report = report_for(g)
    C.confirm_report(report)
    assert report.confirm["shape_mismatches"] == 1
    assert "archlint bug" in report.confirm["note"]
    assert report.confirm["shape_errors"] == ["p: predicted 1x4x9x9, ran 1x4x8x8"]


def test_skip_mismatch_confirmed_at_the_failing_size_and_runs_at_an_admissible_one():
    sides = list(range(4, 13))
    sweep = _Sweep(sides, [s % 2 == 0 for s in sides], {"add": [s % 2 == 1 for s in sides]})
    g = hand_graph(SkipMismatch, (1, 2, 8, 8), sizes=sweep)
    f = finding("skip-connection-mismatch", "add", g)
    report = report_for(g, f)
    C.confirm_report(report)
    assert f.confirmation["status"] == "confirmed", f.confirmation
    detail = f.confirmation["detail"]
    # 7 and 9 are the failing sides nearest to 8; the smaller wins the tie. 7 -> 4 -> 8.
    assert "at input 1x2x7x7 it raised at add" in detail
    assert "size of tensor a (8) must match the size of tensor b (7)" in detail
    assert "at the predicted-admissible input 1x2x8x8 it runs" in detail


def test_skip_mismatch_refuted_when_the_failing_size_runs():
    sides = [8, 16]
    # A lying sweep: says 16 fails, but the model runs there.
    sweep = _Sweep(sides, [True, False], {"add": [False, True]})
    g = hand_graph(SkipMismatch, (1, 2, 8, 8), sizes=sweep)
    f = finding("skip-connection-mismatch", "add", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "refuted"
    assert "ran cleanly at input 1x2x16x16 and 1x2x8x8" in f.confirmation["detail"]


def test_silent_broadcast_confirms_a_skip_mismatch():
    class Broadcast(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AvgPool2d(4)

        def forward(self, x):
            return x + self.pool(x)

    g = hand_graph(Broadcast, (1, 1, 4, 4))
    f = finding("skip-connection-mismatch", "add", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "confirmed"
    assert "broadcast silently: 1x1x4x4, 1x1x1x1" in f.confirmation["detail"]


def test_hardcoded_flatten_confirmed_downstream_of_the_flatten():
    sides = [4, 8, 16]
    sweep = _Sweep(sides, [False, True, False], {"flatten": [True, False, True]})
    g = hand_graph(HardcodedFlatten, (1, 1, 8, 8), sizes=sweep)
    f = finding("hardcoded-flatten", "flatten", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "confirmed"
    assert "at input 1x1x4x4 it raised at fc" in f.confirmation["detail"]
    assert "mat1 and mat2 shapes cannot be multiplied (1x32 and 128x3)" in f.confirmation["detail"]


def test_without_a_sweep_a_size_finding_that_runs_is_not_checked():
    g = hand_graph(SkipMismatch, (1, 2, 8, 8))
    f = finding("skip-connection-mismatch", "add", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "not-checked"
    assert "names no failing size" in f.confirmation["detail"]


def test_without_a_sweep_a_hardcoded_flatten_is_run_at_twice_the_size():
    g = hand_graph(HardcodedFlatten, (1, 1, 8, 8))
    f = finding("hardcoded-flatten", "flatten", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "confirmed"
    assert "at input 1x1x16x16 it raised at fc" in f.confirmation["detail"]


def test_odd_size_stride2_observes_the_rounding():
    g = hand_graph(OddStride, (1, 1, 9, 9))
    f = finding("odd-size-stride2", "pool", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "confirmed"
    assert "pool really maps 9x9 -> 4x4 (9/2 = 4.5 became 4, 9/2 = 4.5 became 4)" in (
        f.confirmation["detail"])


def test_odd_size_stride2_refuted_on_even_sizes():
    g = hand_graph(OddStride, (1, 1, 8, 8))
    f = finding("odd-size-stride2", "pool", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == "refuted"
    assert "1x1x8x8 -> 1x1x4x4" in f.confirmation["detail"]


@pytest.mark.parametrize("kernel,stride,padding,status,pattern", [
    (3, 2, 1, "confirmed", "interior period 2: [1, 2] (max/min 2)"),
    (4, 2, 1, "refuted", "interior period 2: [2, 2] (max/min 1)"),
    (1, 2, 0, "confirmed", "interior period 2: [1, 0] (zeros at output phase(s) [1] mod 2"),
    (5, 3, 0, "confirmed", "interior period 3: [2, 2, 1] (max/min 2)"),
])
def test_checkerboard_pattern_is_measured(kernel, stride, padding, status, pattern):
    g = hand_graph(lambda: Checkerboard(kernel, stride, padding), (1, 1, 5, 5))
    f = finding("kernel-stride-checkerboard", "up", g)
    C.confirm_report(report_for(g, f))
    assert f.confirmation["status"] == status, f.confirmation
    assert f"H: {pattern}" in f.confirmation["detail"]
    assert f"W: {pattern}" in f.confirmation["detail"]


def test_checkerboard_pattern_matches_a_direct_count():
    # Coverage of output o by a 1-D transposed conv: #{(i, t): i*s - p + t*d == o}.
    for k, s, p, d in [(3, 2, 1, 1), (7, 3, 2, 1), (3, 2, 0, 2), (6, 4, 1, 1)]:
        n = C.input_length_for_pattern(k, s, d, p)
        counts = [sum(1 for i in range(n) for t in range(k) if i * s - p + t * d == o)
                  for o in range((n - 1) * s - 2 * p + d * (k - 1) + 1)]
        start, stop, phase = C.transposed_interior(n, k, s, p, d, 0)
        interior = counts[start:stop]
        assert len(interior) >= 2 * s
        assert C.periodic_pattern(interior, s) == interior[:s]
        assert start % s == phase


def test_receptive_field_is_measured_by_backprop():
    g = hand_graph(Plain, (1, 1, 16, 16))
    report = report_for(g)
    C.confirm_report(report)
    rf = report.confirm["receptive_field"]
    assert rf["node"] == "bn"
    assert rf["predicted"] == [12, 12]
    assert rf["measured"] == [12, 12]


def test_receptive_field_disagreement_is_visible():
    g = hand_graph(Plain, (1, 1, 16, 16))
    g.nodes["bn"]["rf"] = _Rf((10, 10), (2, 2))
    report = report_for(g)
    C.confirm_report(report)
    assert report.confirm["receptive_field"]["measured"] == [12, 12]
    assert report.confirm["receptive_field"]["predicted"] == [10, 10]


def test_meta_module_gets_real_weights():
    def on_meta():
        with torch.device("meta"):
            return Plain()

    g = hand_graph(Plain, (1, 1, 16, 16))
    g.graph["module_factory"] = on_meta
    report = report_for(g)
    C.confirm_report(report)
    assert report.confirm["shape_mismatches"] == 0
    assert report.confirm["receptive_field"]["measured"] == [12, 12]


def test_no_graph_marks_findings_not_checked():
    f = Finding("hardcoded-flatten", "AL0", Severity.ERROR, "m", Location("m.py", 1, "x"))
    report = ModelReport(target="m.py", frontend="torch", graph=None, findings=[f])
    C.confirm_report(report)
    assert f.confirmation["status"] == "not-checked"
    assert "no graph" in report.confirm["error"]


def test_rf_fact_readers():
    assert C.rf_sizes(_Rf((7, 7), (2, 2))) == (7, 7)
    assert C.rf_sizes({"size": [3, Fraction(5, 1)]}) == (3, 5)
    assert C.rf_sizes(None) is None
    assert C.rf_strides(_Rf((7,), (Fraction(1, 2),))) == (Fraction(1, 2),)


# ---------------------------------------------------------------------------------------------
# Integration: the real frontend (and, once they land, the passes and rules)
# ---------------------------------------------------------------------------------------------

import os  # noqa: E402

from archlint.config import Options  # noqa: E402

ZOO = ROOT / "fixtures" / "zoo"
MODELS = ROOT / "fixtures" / "models"
SLOW = os.environ.get("ARCHLINT_SLOW_TESTS") == "1"

#: (file, --model, small input shape): small sizes keep the real forward cheap.
ZOO_CASES = [
    ("resnet.py", "resnet18", (1, 3, 64, 64)),
    ("resnet.py", "resnet50", (1, 3, 64, 64)),
    ("mobilenetv2.py", None, (1, 3, 64, 64)),
    ("unet.py", None, (1, 3, 64, 64)),
    ("dcgan.py", None, None),
    ("dcgan_discriminator.py", None, None),
    ("senet.py", None, None),
    ("deeplab.py", None, (1, 3, 65, 65)),
    pytest.param("alexnet.py", None, None,
                 marks=pytest.mark.skipif(not SLOW, reason="61M weights: ARCHLINT_SLOW_TESTS=1")),
    pytest.param("vgg.py", None, None,
                 marks=pytest.mark.skipif(not SLOW, reason="138M weights: ARCHLINT_SLOW_TESTS=1")),
]


def _captures(file, model, shape):
    from archlint.frontends import torch as torch_frontend

    path = ZOO / file
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    opts = Options(model=model, input_shapes=(shape,) if shape else None)
    captures = torch_frontend.capture_file(path, opts)
    assert captures and all(c.graph is not None for c in captures), [c.error for c in captures]
    return captures


def _passes_available() -> bool:
    try:
        from archlint.passes import receptive_field  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("file,model,shape", ZOO_CASES)
def test_zoo_predicted_shapes_are_the_real_ones(file, model, shape):
    for capture in _captures(file, model, shape):
        report = ModelReport(target=file, frontend="torch", model=capture.name,
                             graph=capture.graph)
        C.confirm_report(report)
        assert report.confirm.get("error") is None, report.confirm
        assert report.confirm["shape_mismatches"] == 0, report.confirm.get("shape_errors")
        # every op with a predicted shape was really compared
        predicted = [n for n in capture.graph if capture.graph.nodes[n]["shapes"] is not None
                     and n in set(capture.graph.graph["fx_names"].values())]
        assert report.confirm["shapes_compared"] == len(predicted) > 5


@pytest.mark.skipif(not _passes_available(), reason="receptive-field pass not written yet")
@pytest.mark.parametrize("file,model,shape", ZOO_CASES)
def test_zoo_measured_receptive_field_is_the_predicted_one(file, model, shape):
    from archlint.passes import run_passes

    for capture in _captures(file, model, shape):
        g = capture.graph
        run_passes(g)
        confirmer = C._TorchConfirmer(g, "cpu")
        confirmer.example_shapes = [tuple(s) for s in g.graph["input_shapes"]]
        # A truncated probe: the deepest map whose RF is small enough to measure cheaply.
        nodes = [n for n in C.spatial_rf_nodes(g)
                 if max(C.rf_sizes(g.nodes[n]["rf"])) <= 100
                 and all(Fraction(r).denominator == 1 for r in C.rf_sizes(g.nodes[n]["rf"]))]
        if not nodes:
            pytest.skip("no spatial map with a small integral RF")
        rf = confirmer.confirm_rf_at(nodes[-1])
        assert rf["measured"] == rf["predicted"], rf


def _fixture_findings(name, rule):
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    if not _passes_available():
        pytest.skip("passes not written yet")
    from archlint.api import lint

    report = lint(path)
    found = [(m, f) for m in report.models for f in m.findings if f.rule == rule]
    if not found:
        pytest.skip(f"rule {rule} not written yet (no finding on {name})")
    return found


@pytest.mark.parametrize("fixture,rule", [
    ("kernel_stride_checkerboard_bad.py", "kernel-stride-checkerboard"),
    ("skip_connection_mismatch_bad.py", "skip-connection-mismatch"),
    ("hardcoded_flatten_bad.py", "hardcoded-flatten"),
    ("spatial_collapse_bad.py", "spatial-collapse"),
])
def test_bad_fixtures_are_confirmed(fixture, rule):
    found = _fixture_findings(fixture, rule)
    for model_report in {id(m): m for m, _ in found}.values():
        C.confirm_report(model_report)
        assert model_report.confirm["shape_mismatches"] == 0, model_report.confirm
    for _, f in found:
        assert f.confirmation["status"] == "confirmed", (f.location, f.confirmation)


# ---------------------------------------------------------------------------------------------
# ONNX: onnxruntime, no torch on that path
# ---------------------------------------------------------------------------------------------


def _onnx_flatten_model(tmp_path):
    """x (1x1x8x8) -> ConvTranspose k3 s2 p1 (15x15) -> Reshape to the constant [1, 225]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["up"], name="up", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["up"], ["act"], name="act"),
        helper.make_node("Reshape", ["act", "shape"], ["flat"], name="flat"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w"),
                     numpy_helper.from_array(np.array([1, 225], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "flat.onnx"
    onnx.save(model, path)
    return path


def test_onnx_shapes_checkerboard_and_failing_size(tmp_path):
    from archlint.frontends import onnx as onnx_frontend

    path = _onnx_flatten_model(tmp_path)
    (capture,) = onnx_frontend.capture_file(path, Options())
    g = capture.graph
    g.graph["sizes"] = _Sweep([4, 8], [False, True], {"flat": [True, False]})
    checker = finding("kernel-stride-checkerboard", "up", g)
    flatten = finding("hardcoded-flatten", "flat", g)
    report = ModelReport(target=str(path), frontend="onnx", graph=g, findings=[checker, flatten])
    C.confirm_report(report, device="cuda")  # ignored: onnxruntime runs on the CPU here
    assert report.confirm["device"] == "cpu (onnxruntime)"
    assert report.confirm["shape_mismatches"] == 0
    assert report.confirm["shapes_compared"] >= 3
    assert checker.confirmation["status"] == "confirmed"
    assert "H: interior period 2: [1, 2] (max/min 2)" in checker.confirmation["detail"]
    assert flatten.confirmation["status"] == "confirmed", flatten.confirmation
    assert "at input 1x1x4x4 it raised at flat" in flatten.confirmation["detail"]
    assert "at the predicted-admissible input 1x1x8x8 it runs" in flatten.confirmation["detail"]


def test_onnx_wrong_prediction_is_counted(tmp_path):
    from archlint.frontends import onnx as onnx_frontend

    (capture,) = onnx_frontend.capture_file(_onnx_flatten_model(tmp_path), Options())
    g = capture.graph
    g.nodes["up"]["shapes"] = ((1, 1, 16, 16),)
    report = ModelReport(target="flat.onnx", frontend="onnx", graph=g)
    C.confirm_report(report)
    assert report.confirm["shape_mismatches"] == 1
    assert report.confirm["shape_errors"] == ["up: predicted 1x1x16x16, ran 1x1x15x15"]


def test_onnx_confirm_never_imports_torch(tmp_path):
    import subprocess
    import sys

    path = _onnx_flatten_model(tmp_path)
    code = (
        "import sys\n"
        "from archlint.config import Options\n"
        "from archlint.findings import ModelReport\n"
        "from archlint.frontends import onnx as f\n"
        "from archlint.confirm import confirm_report\n"
        f"(c,) = f.capture_file({str(path)!r}, Options())\n"
        "r = ModelReport(target='m', frontend='onnx', graph=c.graph)\n"
        "confirm_report(r)\n"
        "print(r.confirm['shape_mismatches'], 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.split() == ["0", "False"]
