"""Edge cases of the design-card rules (AL1xx), on hand-built IR graphs and against PyTorch.

The window arithmetic and the transposed-conv overlap pattern are checked against what PyTorch
really computes; the rules are checked on small graphs built with archlint.graph, so each case
states its own sizes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from archlint.findings import Severity
from archlint.graph import Attrs, Location, add_op, new_graph
from archlint.registry import rule_by_id
from archlint.rule import RuleContext, SourceFile
from archlint_rules.kernel_stride_checkerboard import overlap_pattern
from archlint_rules._topology import Window
from archlint_rules.same_padding_stride import same_pads, strided_same_calls

ROOT = Path(__file__).resolve().parent.parent
FILE = "model.py"


# ---------------------------------------------------------------------------------------------
# helpers


class Sweep:
    """A stand-in for the sizes pass's SizeSweep: per-node size arrays over square sides n."""

    def __init__(self, sizes, per_node, admissible=None):
        self.sizes = np.asarray(sizes)
        self._per_node = per_node
        self.admissible = np.ones(len(self.sizes), bool) if admissible is None else np.asarray(admissible)

    def spatial(self, node):
        return self._per_node[node]

    def describe(self, mask):
        return "{" + ", ".join(str(n) for n in self.sizes[np.asarray(mask, bool)]) + "}"


class Builder:
    """add(name, op, inputs, shape, line=..., **attrs) with a running line number."""

    def __init__(self, frontend: str = "torch"):
        self.g = new_graph("Model", FILE, frontend)
        self.line = 10

    def add(self, name, op, inputs=(), shape=None, error=None, line=None, origin="", **attrs):
        self.line += 1
        add_op(
            self.g, name, op, inputs=inputs, attrs=Attrs(**attrs),
            shapes=None if shape is None else (shape,),
            location=Location(FILE, line or self.line, name), origin=origin or op, error=error,
        )
        return name


def run(rule_id: str, g, *, frontend: str = "torch", source: SourceFile | None = None):
    rule = rule_by_id(rule_id)
    assert rule is not None, f"{rule_id} is not registered (pip install -e . --no-deps)"
    ctx = RuleContext(graph=g, frontend=frontend, target=FILE, source=source)
    ctx.rule = rule
    return list(rule.check(ctx))


def conv(b, name, src, shape, k=3, s=1, p=1, d=1, **kw):
    return b.add(name, "conv", [src], shape, kernel=(k, k), stride=(s, s), dilation=(d, d),
                 padding=((p, p), (p, p)), **kw)


# ---------------------------------------------------------------------------------------------
# odd-size-stride2: window arithmetic against PyTorch, and the criterion


def test_window_output_matches_pytorch_pools_and_convs() -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    checked = 0
    for k in (1, 2, 3, 4):
        for s in (2, 3):
            for p in range(k // 2 + 1):
                for d in (1, 2):
                    for n in range(1, 12):
                        x = torch.zeros(1, 1, n)
                        for ceil in (False, True):
                            try:
                                got = F.max_pool1d(x, k, s, p, d, ceil_mode=ceil).shape[-1]
                            except RuntimeError:
                                got = 0
                            assert int(Window(k, s, d, p, p, ceil).output(n)) == got, (k, s, p, d, ceil, n)
                        try:
                            got = F.conv1d(x, torch.zeros(1, 1, k), None, s, p, d).shape[-1]
                        except RuntimeError:
                            got = 0
                        assert int(Window(k, s, d, p, p).output(n)) == got, (k, s, p, d, n)
                        checked += 1
    assert checked > 300


@pytest.mark.parametrize(
    "window, n, fires",
    [
        (Window(3, 2, 1, 1, 1), 57, True),  # 57 -> 29: rounds up
        (Window(2, 2), 57, True),  # 57 -> 28: drops row 56
        (Window(1, 2), 57, True),  # a halving 1x1/s2: 57 -> 29
        (Window(3, 2, 1, 1, 1), 56, False),
        (Window(2, 2), 56, False),
        (Window(3, 2), 55, False),  # AlexNet's pool: 55 -> 27 tiles exactly
        (Window(3, 2), 56, False),  # drops a row, but 2 divides 56 (pool-drops-border's case)
        (Window(4, 2), 57, True),  # valid 4/2 on 57 leaves row 56 unread
        (Window(5, 2), 57, False),  # valid 5/2 on 57 tiles exactly
        (Window(3, 2, ceil_mode=True), 56, False),
        (Window(2, 2, ceil_mode=True), 57, True),  # ceil: the last window hangs over the edge
        (Window(7, 2, 1, 3, 3), 225, True),  # ResNet stem at 225
        (Window(11, 4, 1, 2, 2), 227, False),  # AlexNet conv1 at 227 tiles exactly
    ],
)
def test_rounding_criterion(window: Window, n: int, fires: bool) -> None:
    assert bool(window.rounds(n)) is fires


def test_criterion_never_fires_where_the_stride_divides() -> None:
    sizes = np.arange(1, 400)
    for k in range(1, 8):
        for s in range(2, 5):
            for d in (1, 2):
                for pb in range(0, 4):
                    for pe in range(0, 4):
                        fires = Window(k, s, d, pb, pe).rounds(sizes)
                        assert not fires[sizes % s == 0].any(), (k, s, d, pb, pe)


def test_symmetric_rounding_is_info_asymmetric_is_warning() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 3, 57, 57))
    conv(b, "down", "x", (1, 8, 29, 29), k=3, s=2, p=1)
    b.add("pool", "max_pool", ["x"], (1, 3, 28, 28), kernel=(2, 2), stride=(2, 2),
          dilation=(1, 1), padding=((0, 0), (0, 0)))
    found = {f.location.node: f for f in run("odd-size-stride2", b.g)}
    assert found["down"].severity is Severity.INFO
    assert "57 -> 29 (57/2 = 28.5, rounded up)" in found["down"].message
    assert found["pool"].severity is Severity.WARNING
    assert "57 -> 28 (57/2 = 28.5, rounded down)" in found["pool"].message


def test_odd_size_says_which_sizes_avoid_it() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 3, 57, 57))
    b.add("pool", "max_pool", ["x"], (1, 3, 28, 28), kernel=(2, 2), stride=(2, 2),
          dilation=(1, 1), padding=((0, 0), (0, 0)))
    sides = np.arange(50, 64)
    b.g.graph["input_shapes"] = [(1, 3, 57, 57)]
    b.g.graph["sizes"] = Sweep(sides, {"x": [sides, sides], "pool": [sides // 2, sides // 2]})
    (finding,) = run("odd-size-stride2", b.g)
    assert finding.sizes == (
        "fires at H = W in {51, 53, 55, 57, 59, 61, 63}; avoided at H = W in "
        "{50, 52, 54, 56, 58, 60, 62}"
    )
    assert "e.g. 56x56 instead of 57x57" in finding.fix


def test_kernel_covering_the_whole_map_is_not_a_global_pool_without_a_sweep() -> None:
    """A fixed 2x2 kernel that happens to cover the 2x2 map gives 1x1 at this size only."""
    (finding,) = run("skip-connection-mismatch", _broadcast_graph("whole_map"))
    assert "silently broadcasts" in finding.message and "ctx (line" in finding.message


def _lint_file(tmp_path, source: str, select=("skip-connection-mismatch",)):
    from archlint.api import lint

    path = tmp_path / "model.py"
    path.write_text(source)
    (model,) = lint(path, select=list(select)).models
    assert model.error is None, model.error
    return model


def test_broadcast_after_a_whole_map_conv_is_reported_where_the_sweep_says_so() -> None:
    """fixtures/regressions/broadcast_after_whole_map_conv.py: Conv2d(2, 1, 6) on 6x6 gives 1x1
    and `+` stretches it; at 7x7 the add raises. The rule and the sweep now agree."""
    from archlint.api import lint

    (model,) = lint(ROOT / "fixtures" / "regressions" / "broadcast_after_whole_map_conv.py").models
    (finding,) = [f for f in model.findings if f.rule == "skip-connection-mismatch"]
    assert finding.severity is Severity.ERROR and finding.location.line == 19
    assert "silently broadcasts" in finding.message and "l0 (line 14) at 1x1" in finding.message
    sweep = model.graph.graph["sizes"]
    assert not sweep.admissible[6 - sweep.lo]
    assert finding.sizes == "fires at H = W in all n >= 6; no input size avoids it"


WHOLE_MAP_ON_A_FIXED_GRID = """
import torch
from torch import nn


class Context(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.squeeze = nn.Conv2d(8, 8, 3)  # 3x3 on the fixed 3x3 grid: 1x1 at every input size

    def forward(self, x):
        y = self.body(x)
        return y * torch.sigmoid(self.squeeze(self.pool(y)))


example_input = torch.zeros(1, 3, 12, 12)
"""


def test_whole_map_conv_on_a_fixed_grid_is_intended_broadcasting(tmp_path) -> None:
    """The same 1x1-by-kernel, but on the grid an adaptive pool fixes: 1 at every input size, so
    the sweep admits every size and the rule agrees."""
    model = _lint_file(tmp_path, WHOLE_MAP_ON_A_FIXED_GRID)
    assert model.findings == []
    sweep = model.graph.graph["sizes"]
    assert sweep.admissible[[12 - sweep.lo, 13 - sweep.lo, 64 - sweep.lo]].all()


POOL_SIZED_FROM_ITS_INPUT = """
import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.body(x)
        return y * torch.sigmoid(self.fc(F.avg_pool2d(y, y.shape[2:])))


example_input = torch.zeros(1, 8, 16, 16)
"""


def test_pool_window_sized_from_its_input_is_intended_broadcasting(tmp_path) -> None:
    model = _lint_file(tmp_path, POOL_SIZED_FROM_ITS_INPUT)
    assert model.findings == []
    sweep = model.graph.graph["sizes"]
    assert sweep.admissible[32 - sweep.lo]


def test_merge_sizes_say_where_this_merge_agrees_not_where_the_model_runs() -> None:
    """examples/segmenter.py: the cat disagrees at even n and agrees at every odd n; the model as
    a whole runs at 63 only because of an unrelated flatten, which is not this merge's fact."""
    from archlint.api import lint

    report = lint(ROOT / "examples" / "segmenter.py")
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["skip-connection-mismatch"].sizes == (
        "fires at H = W in n >= 4 with n % 2 == 0; avoided at H = W in n >= 3 with n % 2 == 1"
    )
    flatten = by_rule["hardcoded-flatten"]
    assert "the model runs" not in flatten.message
    assert flatten.sizes == "the features match in_features at H = W in 63..64 only (31x31 after body.0)"
    assert report.models[0].graph.graph["sizes"].describe(
        report.models[0].graph.graph["sizes"].admissible) == "63 only"


def test_sizes_texts_never_say_only_twice() -> None:
    from archlint.api import lint

    files = sorted((ROOT / "fixtures" / "models").glob("*.py")) + [ROOT / "examples" / "segmenter.py"]
    for path in files:
        for f in lint(path).findings:
            for text in (f.message, f.sizes or ""):
                for clause in text.split(";"):
                    assert len(re.findall(r"\bonly\b", clause)) <= 1, (path.name, f.rule, text)


def test_odd_size_avoided_sizes_are_not_cut_to_the_admissible_ones() -> None:
    """A stride-2 pool fed odd sizes in a model that only runs at 56 (a fixed flatten): the
    pool's own finding still says every even side avoids it."""
    b = Builder()
    b.add("x", "input", (), (1, 3, 57, 57))
    b.add("pool", "max_pool", ["x"], (1, 3, 28, 28), kernel=(2, 2), stride=(2, 2),
          dilation=(1, 1), padding=((0, 0), (0, 0)))
    sides = np.arange(50, 64)
    b.g.graph["input_shapes"] = [(1, 3, 57, 57)]
    b.g.graph["sizes"] = Sweep(sides, {"x": [sides, sides], "pool": [sides // 2, sides // 2]},
                               admissible=sides == 56)
    (finding,) = run("odd-size-stride2", b.g)
    assert finding.sizes == (
        "fires at H = W in {51, 53, 55, 57, 59, 61, 63}; avoided at H = W in "
        "{50, 52, 54, 56, 58, 60, 62}"
    )


# ---------------------------------------------------------------------------------------------
# kernel-stride-checkerboard: the exact overlap pattern against a real transposed conv


def test_overlap_pattern_matches_pytorch_tap_counts() -> None:
    torch = pytest.importorskip("torch")
    for k in range(1, 7):
        for s in range(1, 5):
            for d in (1, 2, 3):
                for p in range(0, d * (k - 1) + 1):
                    n = 16
                    w = torch.ones(1, 1, k)
                    try:
                        out = torch.nn.functional.conv_transpose1d(torch.ones(1, 1, n), w, None, s, p, 0, 1, d)[0, 0]
                    except RuntimeError:
                        continue
                    extent = d * (k - 1) + 1
                    pattern = overlap_pattern(k, s, p, d)
                    # interior positions: every tap's source index lies inside the input
                    for o in range(extent, len(out) - extent):
                        assert int(out[o]) == pattern[o % s], (k, s, d, p, o)


@pytest.mark.parametrize(
    "k, s, p, d, expected",
    [(3, 2, 0, 1, (2, 1)), (3, 2, 1, 1, (1, 2)), (4, 2, 1, 1, (2, 2)), (2, 2, 0, 1, (1, 1)),
     (1, 2, 0, 1, (1, 0)), (2, 2, 0, 2, (2, 0)), (5, 3, 1, 1, (2, 1, 2))],
)
def test_overlap_pattern_values(k, s, p, d, expected) -> None:
    assert overlap_pattern(k, s, p, d) == expected


def _transposed(k, s, p, d=1, op=0, n=8):
    b = Builder()
    b.add("x", "input", (), (1, 8, n, n))
    out = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
    b.add("up", "conv_transpose", ["x"], (1, 4, out, out), kernel=(k, k), stride=(s, s),
          dilation=(d, d), padding=((p, p), (p, p)), output_padding=(op, op))
    return b.g


@pytest.mark.parametrize("k, s, p", [(4, 2, 1), (2, 2, 0), (3, 1, 1), (6, 3, 0)])
def test_even_overlap_is_quiet(k, s, p) -> None:
    assert run("kernel-stride-checkerboard", _transposed(k, s, p)) == []


def test_checkerboard_warning_gives_pattern_and_same_size_fix() -> None:
    (finding,) = run("kernel-stride-checkerboard", _transposed(3, 2, 1, op=1))
    assert finding.severity is Severity.WARNING
    assert "1,2" in finding.message
    assert "kernel_size=4, stride=2, padding=1 (same 16x16 output)" in finding.fix
    assert "nn.Upsample(scale_factor=2, mode='bilinear')" in finding.fix


def test_kernel_smaller_than_stride_leaves_holes_error() -> None:
    (finding,) = run("kernel-stride-checkerboard", _transposed(1, 2, 0))
    assert finding.severity is Severity.ERROR
    assert "1,0" in finding.message and "0 taps" in finding.message


def test_dilation_that_skips_a_phase_is_an_error() -> None:
    (finding,) = run("kernel-stride-checkerboard", _transposed(2, 2, 0, d=2))
    assert finding.severity is Severity.ERROR
    assert "2,0" in finding.message


# ---------------------------------------------------------------------------------------------
# skip-connection-mismatch


def _unet_with_valid_conv():
    """skip 16x16; pool 8; valid 3x3 conv 8 -> 6; up x2 -> 12; cat fails (12 vs 16)."""
    b = Builder()
    b.add("x", "input", (), (1, 3, 16, 16))
    conv(b, "enc", "x", (1, 16, 16, 16))
    b.add("pool", "max_pool", ["enc"], (1, 16, 8, 8), kernel=(2, 2), stride=(2, 2),
          dilation=(1, 1), padding=((0, 0), (0, 0)))
    conv(b, "mid", "pool", (1, 32, 6, 6), p=0)
    b.add("up", "conv_transpose", ["mid"], (1, 16, 12, 12), kernel=(2, 2), stride=(2, 2),
          dilation=(1, 1), padding=((0, 0), (0, 0)), output_padding=(0, 0))
    b.add("cat", "concat", ["up", "enc"], None, axis=1, line=99, origin="torch.cat",
          error="Sizes of tensors must match except in dimension 1")
    return b.g


def test_mismatch_names_both_branches_and_the_valid_conv() -> None:
    g = _unet_with_valid_conv()
    (finding,) = run("skip-connection-mismatch", g)
    assert finding.location.line == 99
    assert "up (line 15) at 12x12" in finding.message and "enc (line 12) at 16x16" in finding.message
    assert "first diverge at mid (line 14)" in finding.message
    assert "8 -> 6, not 8" in finding.message
    assert finding.fix.startswith("give mid padding=1")
    assert "crop 4 px" in finding.fix
    assert Location(FILE, 14, "mid") in finding.related


def test_shape_propagation_error_defers_to_the_mismatch_but_not_elsewhere() -> None:
    g = _unet_with_valid_conv()
    assert run("shape-propagation-error", g) == []
    b = Builder()
    b.add("x", "input", (), (1, 3, 8, 8))
    b.add("fc", "linear", ["x"], None, in_features=5, error="mat1 and mat2 shapes cannot be multiplied")
    (finding,) = run("shape-propagation-error", b.g)
    assert finding.location.node == "fc"


def test_mismatch_sizes_from_the_sweep() -> None:
    g = _unet_with_valid_conv()
    sides = np.array([14, 15, 16])
    g.graph["sizes"] = Sweep(sides, {"up": [sides - 4, sides - 4], "enc": [sides, sides]},
                             admissible=[True, True, True])
    (finding,) = run("skip-connection-mismatch", g)
    assert finding.sizes.startswith("fires at H = W in {14, 15, 16}")


def _odd_encoder(up_kind: str):
    """stem 57 -> 3x3/s2/p1 -> 29 -> x2 -> 58; cat with the 57x57 stem fails."""
    b = Builder()
    b.add("x", "input", (), (1, 3, 57, 57))
    conv(b, "stem", "x", (1, 8, 57, 57))
    conv(b, "down", "stem", (1, 16, 29, 29), s=2)
    if up_kind == "upsample":
        b.add("up", "upsample", ["down"], (1, 16, 58, 58), scale=(2.0, 2.0), mode="nearest")
    else:
        b.add("up", "conv_transpose", ["down"], (1, 8, 58, 58), kernel=(2, 2), stride=(2, 2),
              dilation=(1, 1), padding=((0, 0), (0, 0)), output_padding=(0, 0))
    b.add("cat", "concat", ["up", "stem"], None, axis=1, error="sizes")
    return b.g


def test_mismatch_cites_odd_size_stride2_and_escalates_it() -> None:
    g = _odd_encoder("conv_transpose")
    (mismatch,) = run("skip-connection-mismatch", g)
    assert "caused by conv down rounding H and W 57 -> 29" in mismatch.message
    assert "(odd-size-stride2)" in mismatch.message
    assert "call up with output_size=skip.shape[2:]" in mismatch.fix
    (odd,) = run("odd-size-stride2", g)
    assert odd.severity is Severity.WARNING  # symmetric, but it breaks the merge
    assert "skip-connection-mismatch" in odd.message


def test_mismatch_after_a_resize_suggests_interpolate() -> None:
    (mismatch,) = run("skip-connection-mismatch", _odd_encoder("upsample"))
    assert "F.interpolate(x, size=skip.shape[2:])" in mismatch.fix


def test_transposed_conv_cause_gets_output_padding() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 3, 16, 16))
    conv(b, "down", "x", (1, 8, 8, 8), s=2)
    b.add("up", "conv_transpose", ["down"], (1, 3, 15, 15), kernel=(3, 3), stride=(2, 2),
          dilation=(1, 1), padding=((1, 1), (1, 1)), output_padding=(0, 0))
    b.add("add", "add", ["x", "up"], None, error="size mismatch")
    (finding,) = run("skip-connection-mismatch", b.g)
    assert "first diverge at up" in finding.message and "15, not 16" in finding.message
    assert "output_padding=1" in finding.fix


def test_dilation_without_matching_padding_gets_padding_equal_to_dilation() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 8, 32, 32))
    conv(b, "atrous", "x", (1, 8, 30, 30), k=3, p=1, d=2)
    b.add("add", "add", ["x", "atrous"], None, error="size mismatch")
    (finding,) = run("skip-connection-mismatch", b.g)
    assert "give atrous padding=2 (dilation * (kernel_size - 1) / 2)" in finding.fix


def _broadcast_graph(context_op: str):
    b = Builder()
    b.add("x", "input", (), (1, 3, 4, 4))
    conv(b, "body", "x", (1, 8, 2, 2), s=2)
    if context_op == "global_pool":
        b.add("ctx", "adaptive_pool", ["body"], (1, 8, 1, 1), size=(1, 1))
    elif context_op == "view":
        b.add("gap", "global_pool", ["body"], (1, 8))
        b.add("fc", "linear", ["gap"], (1, 8), in_features=8, out_features=8)
        b.add("ctx", "reshape", ["fc"], (1, 8, 1, 1), target_shape=(None, None, 1, 1))
    elif context_op == "whole_map":
        conv(b, "ctx", "body", (1, 8, 1, 1), k=2, p=0)  # the 2x2 kernel covers the 2x2 map
    else:
        conv(b, "ctx", "body", (1, 8, 1, 1), s=2)
    b.add("gate", "pointwise", ["ctx"], b.g.nodes["ctx"]["shapes"][0])
    b.add("mul", "mul", ["body", "gate"], (1, 8, 2, 2))
    return b.g


@pytest.mark.parametrize("context_op", ["global_pool", "view"])
def test_intended_broadcast_is_quiet(context_op) -> None:
    assert run("skip-connection-mismatch", _broadcast_graph(context_op)) == []


def test_broadcast_of_a_strided_1x1_map_is_reported() -> None:
    (finding,) = run("skip-connection-mismatch", _broadcast_graph("strided"))
    assert "silently broadcasts" in finding.message
    assert "ctx (line" in finding.message and "at 1x1" in finding.message
    assert "nn.AdaptiveAvgPool2d(1)" in finding.fix


def test_concat_along_width_compares_height_and_channels_only() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 3, 8, 8))
    conv(b, "a", "x", (1, 4, 8, 8))
    conv(b, "c", "x", (1, 4, 8, 4), k=1, p=0)  # a stand-in branch 4 wide
    b.add("cat", "concat", ["a", "c"], (1, 4, 8, 12), axis=3)
    assert run("skip-connection-mismatch", b.g) == []


# ---------------------------------------------------------------------------------------------
# hardcoded-flatten


def _head(with_pool: bool, view: bool = False):
    b = Builder()
    b.add("x", "input", (), (1, 3, 32, 32))
    conv(b, "features", "x", (1, 16, 8, 8), k=4, s=4, p=0)
    src = "features"
    if with_pool:
        src = b.add("pool", "adaptive_pool", ["features"], (1, 16, 8, 8), size=(8, 8))
    if view:
        b.add("flat", "reshape", [src], (1, 1024), target_shape=(-1, 1024))
    else:
        b.add("flat", "flatten", [src], (1, 1024), axis=1, end_axis=-1)
    b.add("drop", "pointwise", ["flat"], (1, 1024))
    b.add("fc", "linear", ["drop"], (1, 10), in_features=1024, out_features=10)
    sides = np.array([16, 28, 32, 36, 64])
    per_node = {"x": [sides, sides], "features": [sides // 4, sides // 4]}
    if with_pool:
        per_node["pool"] = [np.full(5, 8), np.full(5, 8)]
    return b.g, Sweep(sides, per_node)


def test_flatten_locked_to_one_resolution() -> None:
    g, sweep = _head(with_pool=False)
    g.graph["sizes"] = sweep
    (finding,) = run("hardcoded-flatten", g)
    assert finding.location.node == "flat" and finding.severity is Severity.WARNING
    assert "H = W in {32, 33}" not in finding.message  # only swept sides are named
    # the sizes at which this flatten fits, not a claim about the whole model
    assert "so it fits the linear layer at H = W in {32} (8x8 after features)" in finding.message
    assert finding.sizes == "the features match in_features at H = W in {32} (8x8 after features)"
    assert "nn.AdaptiveAvgPool2d(8)" in finding.fix
    assert Location(FILE, 15, "fc") in finding.related


def test_flatten_after_adaptive_pool_is_quiet_with_and_without_sweep() -> None:
    g, sweep = _head(with_pool=True)
    assert run("hardcoded-flatten", g) == []
    g.graph["sizes"] = sweep
    assert run("hardcoded-flatten", g) == []


def test_flatten_without_sweep_falls_back_to_structure() -> None:
    g, _ = _head(with_pool=False)
    (finding,) = run("hardcoded-flatten", g)
    assert "only at the example size (8x8 after features)" in finding.message


def test_view_minus_one_is_an_error_that_changes_the_batch() -> None:
    g, sweep = _head(with_pool=False, view=True)
    g.graph["sizes"] = sweep
    (finding,) = run("hardcoded-flatten", g)
    assert finding.severity is Severity.ERROR
    assert "silently changes the batch size" in finding.message
    assert "at 64x64 a batch of 1 becomes a batch of 4" in finding.message


def test_linear_failing_at_the_example_is_left_to_shape_propagation_error() -> None:
    b = Builder()
    b.add("x", "input", (), (1, 3, 32, 32))
    b.add("flat", "flatten", ["x"], (1, 3072), axis=1, end_axis=-1)
    b.add("fc", "linear", ["flat"], None, in_features=100, error="mismatch")
    assert run("hardcoded-flatten", b.g) == []


# ---------------------------------------------------------------------------------------------
# same-padding-stride: the source half


def _lines(text: str) -> list[int]:
    return [c.call.lineno for c in strided_same_calls(SourceFile(Path(FILE), text).tree)]


SPELLINGS = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import Conv2d as C2, LazyConv2d
from torch.nn.functional import conv1d
STRIDE = 2
a = nn.Conv2d(3, 8, 3, stride=2, padding="same")
b = nn.Conv2d(3, 8, 3, 2, "same")
c = torch.nn.Conv3d(3, 8, kernel_size=3, padding="same", stride=(1, 2, 1))
d = C2(3, 8, 3, STRIDE, padding="same")
e = LazyConv2d(8, 3, 2, "same")
f = F.conv2d(x, w, None, 2, "same")
g = torch.nn.functional.conv2d(x, w, stride=(2, 2), padding="same")
h = conv1d(x, w, padding="same", stride=3)
i = nn.Conv2d(3, 8, 3, stride=1, padding="same")
j = nn.Conv2d(3, 8, 3, stride=2, padding=1)
k = nn.Conv2d(3, 8, 3, 1, "same")
'''


def test_every_spelling_of_a_strided_same_conv_is_found() -> None:
    assert _lines(SPELLINGS) == [7, 8, 9, 10, 11, 12, 13, 14]


def test_a_conv_that_is_not_torch_is_ignored() -> None:
    text = "class Conv2d:\n    pass\nlayer = Conv2d(3, 8, 3, 2, 'same')\nother = lib.Conv2d(3, 8, 3, 2, 'same')\n"
    assert _lines(text) == []


HELPERS = '''\
from torch import nn
def block(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding="same")
def down(cin, cout, stride=2):
    return nn.Conv2d(cin, cout, 3, stride, "same")
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = block(3, 8)
        self.b = self.make(8, 16)
    def make(self, cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride=stride, padding="same")
'''


def test_stride_from_a_helper_default_is_found_but_stride_one_callers_are_not() -> None:
    calls = strided_same_calls(SourceFile(Path(FILE), HELPERS).tree)
    assert [c.call.lineno for c in calls] == [5]
    assert "default stride=2 of down()" in calls[0].via


def test_stride_from_a_helper_caller_is_found() -> None:
    text = HELPERS + "net2 = block(8, 16, stride=2)\n"
    calls = strided_same_calls(SourceFile(Path(FILE), text).tree)
    assert [c.call.lineno for c in calls] == [3, 5]
    assert "block(..., stride=2) at line 13" in calls[0].via


def test_source_rule_runs_without_a_graph() -> None:
    text = "from torch import nn\nlayer = nn.Conv2d(3, 8, 5, stride=2, padding='same', dilation=2)\n"
    findings = run("same-padding-stride", None, source=SourceFile(Path(FILE), text))
    (finding,) = findings
    assert finding.location.line == 2 and finding.severity is Severity.ERROR
    assert "not supported for strided convolutions" in finding.message
    assert "padding=4" in finding.fix  # dilation 2, kernel 5: extent 9, (9 - 2) / 2 rounded up


# ---------------------------------------------------------------------------------------------
# same-padding-stride: the ONNX half


@pytest.mark.parametrize(
    "n, k, s, mode, pads",
    [(16, 3, 2, "SAME_UPPER", (0, 1)), (17, 3, 2, "SAME_UPPER", (1, 1)),
     (16, 3, 2, "SAME_LOWER", (1, 0)), (16, 4, 2, "SAME_UPPER", (1, 1)), (7, 1, 2, "SAME_UPPER", (0, 0))],
)
def test_same_pads(n, k, s, mode, pads) -> None:
    assert same_pads(n, k, s, 1, mode) == pads


def test_onnx_same_upper_with_stride_is_a_warning_with_pads() -> None:
    b = Builder("onnx")
    b.add("x", "input", (), (1, 3, 16, 16))
    b.add("down", "conv", ["x"], (1, 8, 8, 8), kernel=(3, 3), stride=(2, 2), dilation=(1, 1),
          padding=((0, 1), (0, 1)), auto_pad="SAME_UPPER", origin="Conv")
    b.add("keep", "conv", ["down"], (1, 8, 8, 8), kernel=(3, 3), stride=(1, 1), dilation=(1, 1),
          padding=((1, 1), (1, 1)), auto_pad="SAME_UPPER", origin="Conv")
    (finding,) = run("same-padding-stride", b.g, frontend="onnx")
    assert finding.location.node == "down" and finding.severity is Severity.WARNING
    assert "(begin, end) = (0, 1), (0, 1), asymmetric" in finding.message
    assert "at 17x17 it would pad (1, 1), (1, 1)" in finding.message
    assert "pads=[0, 0, 1, 1]" in finding.fix and "F.pad(x, (0, 1, 0, 1))" in finding.fix


# ---------------------------------------------------------------------------------------------
# the ONNX fixtures (fixtures/onnx/make_fixtures.py): the expected rule fires at the expected node


def _onnx_fixture_module():
    script = ROOT / "fixtures" / "onnx" / "make_fixtures.py"
    assert script.is_file(), "fixtures/onnx/make_fixtures.py is missing"
    spec = importlib.util.spec_from_file_location("archlint_onnx_fixtures", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def onnx_fixtures(tmp_path_factory):
    module = _onnx_fixture_module()
    out = tmp_path_factory.mktemp("onnx")
    module.write_fixtures(out)
    return module, out


DESIGN_RULES = {"skip-connection-mismatch", "kernel-stride-checkerboard", "hardcoded-flatten",
                "odd-size-stride2", "same-padding-stride"}


def test_onnx_fixtures_fire_the_expected_design_rule(onnx_fixtures) -> None:
    from archlint.api import lint
    from archlint.config import Options

    module, out = onnx_fixtures
    checked = 0
    for name, expected in module.MANIFEST.items():
        report = lint(out / name, config=Options(select=("ALL",)))
        findings = [f for m in report.models for f in m.findings]
        if expected in DESIGN_RULES:
            hits = [f for f in findings if f.rule == expected]
            assert hits, f"{name}: {expected} did not fire"
            node = module.EXPECTED_NODE.get(name)
            if node is not None:
                assert any(f.location.node == node for f in hits), (name, [f.location for f in hits])
            checked += 1
        elif expected is None:
            loud = [f for f in findings if f.rule in DESIGN_RULES and f.severity.rank > Severity.INFO.rank]
            assert not loud, f"{name}: {[(f.rule, f.message) for f in loud]}"
    assert checked == len([e for e in module.MANIFEST.values() if e in DESIGN_RULES])
