"""The sweep with sizes pinned to residue classes (``H = m*q + r``) against PyTorch run for real.

Pinning is chosen when a plain run is slow, which depends on the machine; here the sweep is made
to pin from the start (the chooser is replaced, the runs and the partition are the real ones),
and the admissible set must still equal real runs at every square size 1..160.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import archlint.passes.symbolic_sizes as symbolic_sizes  # noqa: E402
from archlint.api import lint  # noqa: E402
from archlint.frontends.torch.symbolic_pin import Pin, modulus_of  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402
from archlint.passes.symbolic_pinning import pins_at  # noqa: E402
from realrun import model_from_file, runs_at  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "sizes" / "swin_pad_merge.py"


def test_pinned_sweep_equals_real_runs(monkeypatch):
    def pinned_first(runner, example, spatial):
        return runner(dict(example), pins=pins_at(example, spatial, 32)), 32

    monkeypatch.setattr(symbolic_sizes, "first_run", pinned_first)
    report = lint(str(FIXTURE)).models[0]
    result = report.graph.graph["symbolic_sizes"]
    assert result.modulus == 32 and sum(bool(r.pins) for r in result.runs) >= 16
    table = report.admissible_sizes
    lo, hi = table["range"]
    ok = expand_progressions(table["square"], lo, hi)
    undecided = expand_progressions(table["undecided"]["square"], lo, hi)
    model = model_from_file(FIXTURE, report.model)
    compared = 0
    for n in range(1, 161):
        if undecided[n - lo]:
            continue
        compared += 1
        assert bool(ok[n - lo]) == runs_at(model, (1, 3, n, n)), n
    assert compared >= 120


def test_pin_classes_cover_every_size_once():
    for m in (1, 4, 32):
        for n in range(2, 300):
            pin = Pin.of(n, m)
            assert pin.holds(n) and pin.q(n) >= 1 and 2 - m <= pin.residue <= 1


def test_modulus_multiplies_along_nesting():
    import sympy
    from torch.utils._sympy.functions import FloorDiv, Mod

    h = sympy.Symbol("h", integer=True, positive=True)
    padded = FloorDiv(h + Mod(4 - Mod(h, 4), 4), 4)     # ceil(h / 4): period 4
    halved = FloorDiv(padded + Mod(padded, 2), 2)       # then ceil(/ 2): period 8
    assert modulus_of([padded], {h}) == 4
    assert modulus_of([halved], {h}) == 8
    assert modulus_of([Mod(halved, 4)], {h}) == 32
    assert modulus_of([h * 3 + 1], {h}) == 1


# ``int(math.ceil(h / 4))`` (MONAI's SwinUNETR pads its attention mask this way) turns a pinned
# size into a number: each size of that class is then its own case
CEIL_INT_MODEL = '''
import math
import torch
import torch.nn.functional as F


class CeilIntPad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError("H and W must be multiples of 8")
        y = self.conv(x)
        hp = int(math.ceil(y.shape[-2] / 4)) * 4
        wp = int(math.ceil(y.shape[-1] / 4)) * 4
        mask = y.new_zeros(1, 2, hp, wp)
        return F.pad(y, (0, wp - y.shape[-1], 0, hp - y.shape[-2])) + mask


example_input = torch.zeros(1, 1, 32, 32)
'''


def test_class_decided_size_by_size_when_pinned_runs_specialise(monkeypatch, tmp_path):
    """A class whose pinned run decides only its own size goes on with literal sizes, one run a
    size, instead of stopping as undecided: the set equals real runs at every size 1..160."""
    def pinned_first(runner, example, spatial):
        return runner(dict(example), pins=pins_at(example, spatial, 8)), 8

    monkeypatch.setattr(symbolic_sizes, "first_run", pinned_first)
    path = tmp_path / "ceil_int_pad.py"
    path.write_text(CEIL_INT_MODEL)
    report = lint(str(path)).models[0]
    result = report.graph.graph["symbolic_sizes"]
    spatial = {"height", "width"}
    literal = [r for r in result.runs if not set(r.symbols.values()) & spatial]
    assert result.modulus == 8 and len(literal) >= 10
    table = report.admissible_sizes
    lo, hi = table["range"]
    ok = expand_progressions(table["square"], lo, hi)
    undecided = expand_progressions(table["undecided"]["square"], lo, hi)
    model = model_from_file(path, report.model)
    # every size of a pinned class (2..160) is decided; size 1 is in no class
    assert not undecided[2 - lo:160 - lo + 1].any(), report.sizes_summary
    for n in range(1, 161):
        if not undecided[n - lo]:
            assert bool(ok[n - lo]) == runs_at(model, (1, 1, n, n)), n


def test_residue_folding_folds_and_steps_aside_on_a_torch_without_its_eval(monkeypatch):
    import sympy
    from torch.utils._sympy import functions

    from archlint.frontends.torch.symbolic_pin import folded_remainders

    q = sympy.Symbol("q", integer=True, positive=True)
    originals = (functions.Mod.__dict__["eval"], functions.PythonMod.__dict__["eval"])
    sympy.core.cache.clear_cache()  # sympy caches constructed functions: each check builds anew
    assert functions.PythonMod(32 * q + 5, 8) != 5  # PyTorch alone keeps the remainder nested
    sympy.core.cache.clear_cache()
    with folded_remainders():
        assert functions.PythonMod(32 * q + 5, 8) == 5  # (32q + 5) mod 8: the multiple folds
        assert functions.Mod(32 * q + 5, 8) == 5
    assert (functions.Mod.__dict__["eval"], functions.PythonMod.__dict__["eval"]) == originals
    sympy.core.cache.clear_cache()
    assert functions.PythonMod(32 * q + 5, 8) != 5  # folded only during a pinned run
    # a torch whose PythonMod has no eval of its own: runs go on unfolded, nothing patched
    monkeypatch.setattr(functions, "PythonMod", type("PythonMod", (), {}))
    with folded_remainders():
        assert functions.Mod.__dict__["eval"] is originals[0]
    assert functions.Mod.__dict__["eval"] is originals[0]
