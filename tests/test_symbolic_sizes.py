"""The symbolic sizes engine against PyTorch run for real (CPU, tiny widths).

Every model's JSON ``admissible_sizes`` must agree with a real forward at every square size
1..160 (sampled for the real-network zoo): a size listed admissible runs, a size in neither list
fails, and undecided sizes are allowed only where the JSON says so. Also: the float-exact
evaluator against real interpolate runs (1..4096), and the bands where a ViT resizing its
position embedding by scale factor fails (976, 1840, 1952 for patch 16).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from archlint.api import lint  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402
from realrun import model_from_file as _model_of  # noqa: E402
from realrun import runs_at as _runs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE_FIXTURES = sorted((ROOT / "fixtures" / "sizes").glob("*.py"))
SQUARE = range(1, 161)



def _square_shape(example, n):
    return (example[0], example[1], *([n] * (len(example) - 2)))


def _assert_agrees(report, model, sizes, shape_at):
    table = report.admissible_sizes
    assert table is not None, report.sizes_summary
    lo, hi = table["range"]
    ok = expand_progressions(table["square"], lo, hi)
    undecided = expand_progressions(table["undecided"]["square"], lo, hi)
    assert not (ok & undecided).any()
    for n in sizes:
        real = _runs(model, shape_at(n))
        if undecided[n - lo]:
            continue
        claim = bool(ok[n - lo])
        assert claim == real, f"{report.model} at {n}: archlint says {claim}, PyTorch {real}"


@pytest.mark.parametrize("path", SIZE_FIXTURES, ids=lambda p: p.stem)
def test_fixture_sizes_equal_real_runs(path):
    for report in lint(str(path)).models:
        assert report.graph is not None, report.error
        example = report.input_shapes[0]
        model = _model_of(path, report.model)
        sizes = SQUARE if len(example) < 5 else range(1, 41)
        _assert_agrees(report, model, sizes, lambda n: _square_shape(example, n))
        assert report.admissible_sizes["exact"] or report.admissible_sizes["undecided"]["square"]


def test_batch_statement_equals_real_runs():
    for path in (ROOT / "fixtures/models/batch_locked_bad.py", ROOT / "fixtures/models/batch_locked_good.py"):
        for report in lint(str(path)).models:
            table = report.admissible_sizes
            lo, hi = table["range"]
            ok = expand_progressions(table["batch"], lo, hi)
            model = _model_of(path, report.model)
            example = report.input_shapes[0]
            for b in (1, 2, 3, 5):
                assert bool(ok[b - lo]) == _runs(model, (b, *example[1:])), (report.model, b)


# -- issue 18: float-exact scale factors ---------------------------------------------------------


def test_scale_vit_failing_bands_are_exact():
    path = ROOT / "fixtures" / "sizes" / "vit_interp_scale.py"
    report = lint(str(path)).models[0]
    table = report.admissible_sizes
    assert table["exact"]
    ok = expand_progressions(table["square"], *table["range"])
    for n in (976, 1840, 1952):
        assert not ok[n - 1], n
    # the model's real formula at every size 16..2048 (a real run per size would take minutes:
    # the shapes are what fail, so run the two shape-deciding steps for real)
    pos = torch.zeros(1, 1, 14, 14)
    side = math.sqrt(14 * 14)
    for n in range(16, 2049):
        h0 = n // 16
        out = torch.nn.functional.interpolate(pos, scale_factor=(h0 / side, h0 / side), mode="nearest")
        assert bool(ok[n - 1]) == (out.shape[-1] == h0), n


@pytest.mark.parametrize("recompute", [None, True])
def test_evaluator_matches_real_interpolate_1_to_4096(recompute):
    """trunc(float(in) * scale) as the engine evaluates it equals the real output size."""
    import sympy

    from archlint.passes.sizes_eval import evaluate
    from torch.utils._sympy.functions import FloatTrueDiv, FloorDiv, ToFloat, TruncToInt

    s = sympy.Symbol("s", integer=True, positive=True)
    expr = TruncToInt(sympy.Integer(14) * FloatTrueDiv(ToFloat(FloorDiv(s, 16)), sympy.Float(14.0)))
    sizes = np.arange(1, 4097, dtype=np.int64)
    got = evaluate(expr, {s: sizes})
    grid = torch.zeros(1, 1, 14, 14)
    for n in range(16, 4097):
        h0 = n // 16
        real = torch.nn.functional.interpolate(grid, scale_factor=h0 / 14.0, mode="nearest",
                                               recompute_scale_factor=recompute).shape[-1]
        assert got[n - 1] == real, n


# -- Python checks and real networks -------------------------------------------------------------


def test_raise_in_forward_is_a_finding_at_its_line():
    report = lint(str(ROOT / "fixtures/sizes/raises_unless_32.py")).models[0]
    found = [f for f in report.findings if f.rule == "input-size-check"]
    assert found and found[0].location.line == 14
    assert "H and W must be multiples of 32" in found[0].message
    assert found[0].severity.name.lower() == "info"


def test_raise_at_the_example_is_an_error():
    report = lint(str(ROOT / "fixtures/sizes/raises_unless_32.py"), input_shapes=[(1, 3, 48, 48)]).models[0]
    found = [f for f in report.findings if f.rule == "input-size-check"]
    assert found and found[0].severity.name.lower() == "error"
    assert "admissible" not in (report.sizes_summary or "").split("example")[-1] or "fails" in report.sizes_summary


def test_batch_locked_findings_at_their_lines():
    path = ROOT / "fixtures/models/batch_locked_bad.py"
    expected = {i + 1 for i, line in enumerate(path.read_text().splitlines())
                if "# expect: batch-locked" in line}
    got = {f.location.line for m in lint(str(path)).models for f in m.findings if f.rule == "batch-locked"}
    assert got == expected
    quiet = [f for m in lint(str(ROOT / "fixtures/models/batch_locked_good.py")).models for f in m.findings
             if f.rule == "batch-locked"]
    assert not quiet


def test_a_readable_constant_index_is_checked_against_the_size():
    """A model instance keeps its index buffer on the CPU: its bounds become a guard, so the
    sizes are exact (from the file, built on the meta device, they are undecided)."""
    path = ROOT / "fixtures" / "sizes" / "index_constant.py"
    model = _model_of(path, "PickRows")
    report = lint(model, torch.zeros(1, 3, 64, 64)).models[0]
    table = report.admissible_sizes
    assert table["exact"]
    ok = expand_progressions(table["square"], *table["range"])
    for n in range(1, 65):
        assert bool(ok[n - table["range"][0]]) == _runs(model, (1, 3, n, n)), n


def test_jit_isinstance_takes_the_eager_branch():
    """``torch.jit.isinstance(y, torch.Tensor)`` is True in eager mode: the concatenation under
    it is in the graph, the head's 16 input channels match (no false AL001), and every node's
    shape at the example is what a real run gives."""
    path = ROOT / "fixtures" / "sizes" / "jit_isinstance_concat.py"
    (report,) = lint(str(path)).models
    assert not [f for f in report.findings if f.severity == "error"], report.findings
    g = report.graph
    assert any(g.nodes[n]["op"] == "concat" for n in g.nodes)
    outputs = [n for n in g.nodes if g.nodes[n]["op"] == "output"]
    real = _model_of(path, report.model)(torch.zeros(1, 3, 32, 32))
    out_shape = g.nodes[g.nodes[outputs[0]]["inputs"][0]]["shapes"][0]
    assert tuple(out_shape) == tuple(real.shape)
    assert report.admissible_sizes["exact"]


@pytest.mark.parametrize("stem, smallest", [("index_constant", 29), ("relative_position_index", 7)])
def test_meta_built_index_buffers_are_read(stem, smallest):
    """Linted from the file (built on the meta device), an index buffer's values come from a CPU
    build: the sizes are exact and equal real runs."""
    path = ROOT / "fixtures" / "sizes" / f"{stem}.py"
    (report,) = lint(str(path)).models
    table = report.admissible_sizes
    assert table["exact"], report.sizes_summary
    model = _model_of(path, report.model)
    ok = expand_progressions(table["square"], *table["range"])
    for n in range(1, 41):
        assert bool(ok[n - table["range"][0]]) == _runs(model, (1, 3, n, n)), n
    assert int(np.flatnonzero(ok)[0]) + table["range"][0] == smallest
