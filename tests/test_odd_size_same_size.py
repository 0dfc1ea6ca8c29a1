"""AL104 (odd-size-stride2) on models with a spatial output reads the sizes pass's
``same_size`` (from the exact engine): what it says about the output size, and the size its fix
proposes, are checked against PyTorch run for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from archlint.api import lint  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402
from archgen import load_module  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "sizes" / "odd_size_output.py"


def _out_side(model, n: int) -> int:
    with torch.no_grad():
        return model(torch.zeros(1, 3, n, n)).shape[-1]


@pytest.fixture(scope="module")
def reports():
    module = load_module(FIXTURE, "_odd_size_output")
    out = {}
    for shape in ((1, 3, 57, 57), (1, 3, 58, 58)):
        for report in lint(str(FIXTURE), input_shapes=[shape]).models:
            out[report.model, shape[-1]] = (report, getattr(module, report.model)().eval())
    return out


def test_same_size_equals_real_runs(reports):
    for (name, _), (report, model) in reports.items():
        table = report.admissible_sizes
        lo, hi = table["range"]
        same = expand_progressions(table["same_size"], lo, hi)
        for n in range(1, 97):
            assert bool(same[n - lo]) == (_out_side(model, n) == n), (name, n)


def test_the_statement_about_the_output_is_what_pytorch_does(reports):
    for (name, n), (report, model) in reports.items():
        for f in (f for f in report.findings if f.rule == "odd-size-stride2"):
            keeps = _out_side(model, n) == n
            if keeps:
                assert f"output still has the input size at {n}x{n}" in f.message, (name, f.message)
                assert "upsample will not give the size back" not in f.message
            else:
                assert f"the output size differs from the input at {n}x{n}" in f.message, (name, f.message)
            assert "the output keeps the input size" in f.sizes


def test_the_proposed_size_keeps_the_output_size(reports):
    for (name, n), (report, model) in reports.items():
        for f in (f for f in report.findings if f.rule == "odd-size-stride2"):
            proposed = int(re.search(r"e\.g\. (\d+)x\1 instead", f.fix).group(1))
            assert _out_side(model, proposed) == proposed, (name, n, f.fix)


def test_only_the_layer_that_rounds_fires(reports):
    # at 58 the first halving does not round (58 -> 29), the second does (29 -> 15)
    report, _ = reports["TwoStages", 58]
    lines = {f.location.line for f in report.findings if f.rule == "odd-size-stride2"}
    text = FIXTURE.read_text().splitlines()
    assert [text[i - 1].strip().split(" =")[0] for i in lines] == ["self.d2"]
