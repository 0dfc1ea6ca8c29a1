"""AL106 batch-locked on PyTorch models: each lock is reported at its line with the fix, the
model really runs at batch 1 only (PyTorch run for real), and models whose every batch runs stay
quiet (the fixed twins, the size fixtures, the transformer fixtures; the zoo in the slow set)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from archlint.api import lint  # noqa: E402
from archgen import load_module  # noqa: E402
from realrun import linted, runs_at  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "fixtures/models/batch_locked_bad.py"
GOOD = ROOT / "fixtures/models/batch_locked_good.py"


def _locks(path, **options):
    models = lint(str(path), **options).models if options else linted(path)
    return [(m.model, f) for m in models for f in m.findings if f.rule == "batch-locked"]


def test_each_lock_at_its_line_with_the_fix_and_true_in_pytorch():
    module = load_module(BAD, "_batch_locked_bad")
    lines = BAD.read_text().splitlines()
    found = _locks(BAD)
    assert {m for m, _ in found} == {"ViewOne", "ReshapeOne", "ConstantBatch"}
    for model_name, f in found:
        assert "# expect: batch-locked" in lines[f.location.line - 1], (model_name, f.location)
        assert "works only at batch 1" in f.message
        assert "x.flatten(1)" in f.fix and "x.view(x.shape[0], -1)" in f.fix
        model = getattr(module, model_name)().eval()
        assert runs_at(model, (1, 3, 8, 8)) and not runs_at(model, (2, 3, 8, 8)), model_name


def test_fixed_twins_run_at_every_batch_and_stay_quiet():
    module = load_module(GOOD, "_batch_locked_good")
    assert _locks(GOOD) == []
    for report in linted(GOOD):
        model = getattr(module, report.model)().eval()
        assert all(runs_at(model, (b, 3, 8, 8)) for b in (1, 2, 5)), report.model


def test_the_example_batch_is_not_a_lock():
    """At --input-shape 2,... the view(1, -1) model fails at its own example: that is where it
    is reported (an error at the example), not as a lock."""
    found = _locks(BAD, input_shapes=[(2, 3, 8, 8)])
    assert all(m != "ViewOne" for m, _ in found)


QUIET = sorted((ROOT / "fixtures/transformers").glob("*.py")) + sorted((ROOT / "fixtures/sizes").glob("*.py"))


@pytest.mark.parametrize("path", QUIET, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_quiet_where_every_batch_runs(path):
    assert _locks(path) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "fixtures/zoo").glob("*.py")), ids=lambda p: p.stem)
def test_quiet_on_the_zoo(path):
    assert _locks(path) == []
