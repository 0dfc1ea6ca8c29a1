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
from archlint.passes.receptive_field import ReceptiveField, receptive_field_pass  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# A tiny hand-built frontend: fx trace + real shapes -> IR, with the graph keys confirm reads
# ---------------------------------------------------------------------------------------------

_MODULE_OPS = {
    nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv_transpose", nn.ConvTranspose2d: "conv_transpose",
    nn.MaxPool2d: "max_pool", nn.AvgPool2d: "avg_pool", nn.Linear: "linear",
    nn.BatchNorm2d: "norm", nn.ReLU: "pointwise", nn.Flatten: "flatten",
    nn.AdaptiveAvgPool2d: "adaptive_pool", nn.Sigmoid: "pointwise",
}
_FUNCTION_OPS = {"add": "add", "mul": "mul", "cat": "concat", "flatten": "flatten",
                 "relu": "pointwise"}


def hand_graph(module_factory, input_shape, *, name="model", sizes=None):
    """IR for ``module_factory()`` traced by fx, with real shapes at ``input_shape`` and the
    real receptive-field pass."""
    module = module_factory().eval()
    gm = torch.fx.symbolic_trace(module)
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(torch.zeros(input_shape))
    g = new_graph(name, None, "torch")
    fx_names = {}
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
    g.graph.update(module_factory=module_factory, fx_names=fx_names,
                   input_shapes=[tuple(input_shape)], sizes=sizes)
    receptive_field_pass(g)
    return g


def _attrs_of(sub) -> Attrs:
    if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d, nn.ConvTranspose1d, nn.Conv1d)):
        return Attrs(kernel=sub.kernel_size, stride=sub.stride, dilation=sub.dilation,
                     padding=tuple((p, p) for p in sub.padding),
                     output_padding=tuple(sub.output_padding))
    if isinstance(sub, nn.AdaptiveAvgPool2d):
        size = sub.output_size
        return Attrs(size=(size, size) if isinstance(size, int) else tuple(size))
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

    def nearest(self, n):
        ok = [s for s, good in zip(self.sizes, self.admissible) if good]
        below, above = [s for s in ok if s <= n], [s for s in ok if s >= n]
        return (below[-1] if below else None, above[0] if above else None)


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
    assert rf["status"] == "confirmed", rf
    assert rf["predicted"] == rf["measured"] == [12, 12]
    # By hand (Distill): S = 1*1*2*1 = 2, P = 1 + 0 + 2*2 = 5: unit j reads 2j-5 .. 2j+6.
    assert rf["predicted_bounds"] == [[2 * j - 5, 2 * j + 6] for j in rf["unit"]]
    assert rf["measured_bounds"] == rf["predicted_bounds"]
    side = int(rf["input"].split("x")[0])
    assert all(C.RF_MARGIN <= a and b <= side - 1 - C.RF_MARGIN for a, b in rf["measured_bounds"])
    assert report.confirm["rf"].startswith("bn: measured 12x12 = predicted")


def test_receptive_field_disagreement_is_visible():
    g = hand_graph(Plain, (1, 1, 16, 16))
    g.nodes["bn"]["rf"] = (ReceptiveField(10, Fraction(2), Fraction(4)),) * 2
    report = report_for(g)
    C.confirm_report(report)
    rf = report.confirm["receptive_field"]
    assert rf["status"] == "refuted"
    assert rf["measured"] == [12, 12]
    assert rf["predicted"] == [10, 10]
    assert "archlint bug" in report.confirm["rf"]


class UpThenConv(nn.Module):
    """Transposed conv k3 s2 p1, then a 3x3 conv: even units read 3 inputs, odd units 2."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(self.up(x))


def test_units_that_differ_by_phase_are_compared_to_their_own_bounds():
    g = hand_graph(UpThenConv, (1, 1, 8, 8))
    (field, _) = g.nodes["conv"]["rf"]
    assert field.period == 2 and field.size == 3
    confirmer = C._TorchConfirmer(g, "cpu")
    for j, span in [(10, (4, 6)), (11, (5, 6))]:  # by hand: (j-2)/2..(j+2)/2, (j-1)/2..(j+1)/2
        rf = confirmer.confirm_rf_at("conv", [C.RFProbe("conv", (12, 12), (j, j))])
        assert rf["status"] == "confirmed", rf
        assert rf["measured_bounds"] == [list(span)] * 2
        assert "period 2" in rf["note"]
    report = report_for(g)
    C.confirm_report(report)
    assert report.confirm["receptive_field"]["status"] == "confirmed"


class SqueezeExcite(nn.Module):
    """conv3 -> x * sigmoid(conv1x1(global average)): every unit reads the whole input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(2, 2, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        y = self.conv(x)
        return y * self.gate(self.fc(self.pool(y)))


def test_global_branches_are_detached_and_seen_to_read_the_whole_input():
    g = hand_graph(SqueezeExcite, (1, 1, 16, 16))
    assert g.nodes["gate"]["rf_global"] and not g.nodes["mul"]["rf_global"]
    report = report_for(g)
    C.confirm_report(report)
    rf = report.confirm["receptive_field"]
    assert rf["node"] == "mul" and rf["status"] == "confirmed", rf
    assert rf["measured"] == [3, 3]
    assert "(pool, fc, gate) were detached" in rf["note"]
    assert "reads the whole input" in rf["note"]


def test_a_global_branch_the_pass_missed_refutes_the_field():
    g = hand_graph(SqueezeExcite, (1, 1, 16, 16))
    for n in ("pool", "fc", "gate"):
        g.nodes[n]["rf_global"] = False
    rf = C._TorchConfirmer(g, "cpu").confirm_rf()
    assert rf["status"] == "refuted"
    side = int(rf["input"].split("x")[0])
    assert rf["measured_bounds"] == [[0, side - 1]] * 2


class AdaptiveGrid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x):
        return self.pool(self.conv(x))


def test_a_field_read_off_the_example_size_is_probed_there():
    # At 64x64 the adaptive pool is a 16x16 window: r = 3 + 15 = 18, S = 16, P = 1.
    g = hand_graph(AdaptiveGrid, (1, 1, 64, 64))
    assert C.size_dependent_op(g, "pool") == "pool"
    assert C.size_dependent_op(g, "conv") is None
    report = report_for(g)
    C.confirm_report(report)
    rf = report.confirm["receptive_field"]
    assert rf["node"] == "pool" and rf["input"] == "64x64"
    assert rf["status"] == "confirmed", rf
    assert rf["measured_bounds"] == [[16 * j - 1, 16 * j + 16] for j in rf["unit"]]


def test_probe_unit_keeps_the_field_inside_the_input():
    field = ReceptiveField(5, Fraction(2), Fraction(2))  # unit j reads 2j-2 .. 2j+2
    assert C.probe_unit(field, 10, 20, 4) == 4
    assert C.probe_unit(field, 6, 12, 4) is None  # 2..6 and 4..8 both touch the margin
    phased = ReceptiveField(1, Fraction(1, 2), Fraction(0), phases=(None, (0, 0)))
    assert C.probe_unit(phased, 41, 20, 4) == 19  # the central unit 20 reads nothing


def test_support_bounds():
    import numpy as np

    mask = np.zeros((6, 9), dtype=bool)
    mask[2, 3] = mask[4, 7] = True
    assert C.support_bounds(mask) == ((2, 4), (3, 7))
    assert C.support_bounds(np.zeros((3, 3), dtype=bool)) is None


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
    seven, five = ReceptiveField(7, Fraction(2), Fraction(3)), ReceptiveField(5, Fraction(1), Fraction(2))
    assert C.rf_sizes((seven, five)) == (7, 5)
    assert C.rf_sizes((seven, None)) is None
    assert C.rf_sizes(None) is None


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
    assert path.exists(), f"zoo model {path} is missing"
    opts = Options(model=model, input_shapes=(shape,) if shape else None)
    captures = torch_frontend.capture_file(path, opts)
    assert captures and all(c.graph is not None for c in captures), [c.error for c in captures]
    return captures


#: The zoo probe's budget: the deepest map whose field fits a 72x72 input (r <= 64), which
#: still crosses strided stages, residual adds, SE gates and transposed convs, and keeps the
#: float64 backward cheap. The CLI default (512x512) measures ResNet's whole 435-pixel field.
ZOO_PROBE_PIXELS = 72 * 72


@pytest.mark.parametrize("file,model,shape", ZOO_CASES)
def test_zoo_shapes_and_receptive_fields_are_confirmed(file, model, shape):
    from archlint.passes import run_passes

    for capture in _captures(file, model, shape):
        g = capture.graph
        run_passes(g)
        report = ModelReport(target=file, frontend="torch", model=capture.name, graph=g)
        C.confirm_report(report, max_probe_pixels=ZOO_PROBE_PIXELS)
        confirm = report.confirm
        assert confirm.get("error") is None, confirm
        assert confirm["shape_mismatches"] == 0, confirm.get("shape_errors")
        # every op with a predicted shape was really compared
        predicted = [n for n in g if g.nodes[n]["shapes"] is not None
                     and n in set(g.graph["fx_names"].values())]
        assert confirm["shapes_compared"] == len(predicted) > 5

        rf = confirm["receptive_field"]
        assert rf["status"] == "confirmed", rf
        assert rf["measured_bounds"] == rf["predicted_bounds"]
        node = rf["node"]
        # a deep map (or the last one), never a trivial first layer
        assert node == C.last_spatial_node(g) or max(rf["predicted"]) >= 20, rf
        if any(f.period > 1 for f in g.nodes[node]["rf"]):
            assert "exact bounds" in rf["note"]
        if C.global_ancestors(g, node):
            assert "reads the whole input, as rf_global says" in rf["note"]


def _fixture_findings(name, rule):
    from archlint.api import lint

    report = lint(MODELS / name)
    found = [(m, f) for m in report.models for f in m.findings if f.rule == rule]
    assert found, f"no {rule} finding on {name}"
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
        C.confirm_report(model_report, max_probe_pixels=ZOO_PROBE_PIXELS)
        assert model_report.confirm["shape_mismatches"] == 0, model_report.confirm
        rf = model_report.confirm["receptive_field"]
        assert rf is None or rf["status"] == "confirmed", rf
    for _, f in found:
        assert f.confirmation["status"] == "confirmed", (f.location, f.confirmation)


_FLATTEN_THEN_DROPOUT = """
import torch
from torch import nn

example_input = torch.empty(1, 3, 8, 8)


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.conv(x), 1)))
"""


def test_sweep_knows_a_flatten_fails_through_a_dropout(tmp_path):
    from archlint.api import lint

    path = tmp_path / "model.py"
    path.write_text(_FLATTEN_THEN_DROPOUT)
    (m,) = lint(path).models
    f = next(f for f in m.findings if f.rule == "hardcoded-flatten")
    C.confirm_report(m)
    # the sweep predicts the failing sizes, and the real run at the nearest one raises at fc ...
    assert f.confirmation["status"] == "confirmed"
    assert "at input 1x3x7x7 it raised at fc" in f.confirmation["detail"]
    assert "archlint bug in the sizes pass" not in f.confirmation["detail"]
    # ... while the only admissible size runs
    assert "at the predicted-admissible input 1x3x8x8 it runs" in f.confirmation["detail"]


# --- the CLI --------------------------------------------------------------------------------


def test_cli_missing_device_is_one_line_and_exit_2(capsys):
    from archlint.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([str(ZOO / "resnet.py"), "--confirm", "--device", "cuda"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "archlint: error: --device cuda: no CUDA GPU is available on this machine\n"


@pytest.fixture(scope="module")
def checkerboard_cli():
    """(json report, text report) of --confirm on the checkerboard fixture."""
    import contextlib
    import io
    import json

    from archlint.cli import main

    target = str(MODELS / "kernel_stride_checkerboard_bad.py")
    outputs = []
    for fmt in ("json", "text"):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert main([target, "--confirm", "--format", fmt]) == 1
        outputs.append(buffer.getvalue())
    return json.loads(outputs[0]), outputs[1]


def test_cli_json_carries_each_findings_confirmation(checkerboard_cli):
    report, _ = checkerboard_cli
    (model,) = report["models"]
    assert model["findings"]
    for f in model["findings"]:
        assert f["confirmation"]["status"] in ("confirmed", "refuted", "not-checked"), f
        if f["rule"] == "kernel-stride-checkerboard":
            assert f["confirmation"]["status"] == "confirmed", f
            assert "interior period" in f["confirmation"]["detail"]
    assert model["confirm"]["shape_mismatches"] == 0
    assert model["confirm"]["receptive_field"]["status"] == "confirmed"


def test_cli_text_tags_every_finding(checkerboard_cli):
    report, text = checkerboard_cli
    findings = report["models"][0]["findings"]
    tags = [line for line in text.splitlines() if line.startswith("      confirm: ")]
    assert len(tags) == len(findings)
    assert [t.split()[1] for t in tags] == [f["confirmation"]["status"] for f in findings]
    assert any(line.startswith("  confirm: on cpu: shape_mismatches 0") and " = predicted " in line
               for line in text.splitlines())


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
    receptive_field_pass(g)
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
    rf = report.confirm["receptive_field"]
    assert rf["node"] == "act" and rf["status"] == "not-checked"
    assert "no backward pass" in report.confirm["rf"]


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


# ---------------------------------------------------------------------------------------------
# The real forward decides, never the traced graph
# ---------------------------------------------------------------------------------------------


class FxOnlyBranch(nn.Module):
    """fx tracing skips the border-cropped add; the real forward always takes it and fails."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if not torch.fx._symbolic_trace.is_fx_tracing():
            y = y + y[..., 1:, 1:]
        return y


class FxOnlyFailure(nn.Module):
    """The opposite artefact: only the traced graph takes the failing branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if torch.fx._symbolic_trace.is_fx_tracing():
            y = y + y[..., 1:, 1:]
        return y


def _eager_error(factory, shape):
    try:
        with torch.no_grad():
            factory().eval()(torch.randn(shape))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("factory", [FxOnlyBranch, FxOnlyFailure])
def test_confirm_runs_the_real_forward_not_the_traced_graph(factory):
    g = hand_graph(FxOnlyBranch, (1, 1, 8, 8))  # the IR of the traced graph (conv only)
    g.graph["module_factory"] = factory  # confirm re-traces and runs this one
    report = report_for(g)
    C.confirm_report(report)
    truth = _eager_error(factory, (1, 1, 8, 8))
    assert (factory is FxOnlyBranch) == (truth is not None)  # the model really is as described
    assert report.confirm.get("example_error") == truth
    assert "tracing artefact" in report.confirm["traced_differs"]
    # shapes recorded by a graph that did something else are not compared
    assert report.confirm["shapes_compared"] == 0


def test_confirm_attributes_a_real_failure_to_its_node_when_the_graph_agrees():
    sides = list(range(4, 13))
    sweep = _Sweep(sides, [s % 2 == 0 for s in sides], {"add": [s % 2 == 1 for s in sides]})
    g = hand_graph(SkipMismatch, (1, 2, 8, 8), sizes=sweep)
    f = finding("skip-connection-mismatch", "add", g)
    report = report_for(g, f)
    C.confirm_report(report)
    assert "traced_differs" not in report.confirm
    assert "it raised at add" in f.confirmation["detail"]


class DictFxOnlyBranch(nn.Module):
    """Takes a dict and a keyword mask; fx tracing skips the border-cropped add, the real
    forward takes it and fails."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, batch, *, mask):
        y = self.conv(batch["image"]) * mask
        if not torch.fx._symbolic_trace.is_fx_tracing():
            y = y + y[..., 1:, 1:]
        return y


class DictModel(nn.Module):
    """The same inputs, and a forward that fx traces faithfully."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, batch, *, mask):
        return self.conv(batch["image"]) * mask


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("factory", [DictFxOnlyBranch, DictModel])
def test_confirm_calls_the_real_forward_with_dict_and_keyword_inputs(factory):
    from archlint.api import lint

    model = factory().eval()
    image, mask = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    report = lint(model, ({"image": image},), example_kwargs={"mask": mask}).models[0]
    assert report.graph is not None, report.error
    C.confirm_report(report)
    try:
        with torch.no_grad():
            model({"image": torch.randn(1, 1, 8, 8)}, mask=torch.randn(1, 1, 8, 8))
        truth = None
    except Exception as exc:
        truth = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    assert (factory is DictFxOnlyBranch) == (truth is not None)
    assert report.confirm.get("example_error") == truth
    if factory is DictFxOnlyBranch:
        assert "tracing artefact" in report.confirm["traced_differs"]
    else:
        assert "traced_differs" not in report.confirm
        assert report.confirm["shapes_compared"] > 0
