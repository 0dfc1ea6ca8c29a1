"""Admissible input sizes of real networks (MONAI, diffusers, transformers) against PyTorch.

Each model file in ``fixtures/real`` builds a network from a package with a small config (no
weights). Its JSON ``admissible_sizes`` must equal the sizes where a real forward on CPU works.
The sizes compared (``realrun.square_sample``): every square size 1..64, then up to 160 the
first and last size of every residue class modulo the lcm of the model's total stride and the
claim's steps, and the edges of every claimed or undecided progression (and the sizes next to
them) up to 256; in 3-D every size 1..40. A size the JSON lists as undecided is skipped, but only
with a reason in the text, and never one listed as admissible. A fresh copy of the model runs at
each size: some models remember the last input size (Hugging Face's Swin shrinks its window for
a small input). Each model is linted and built once per module, and each size run once.

The last test checks every real model and every fixture: no admissible size fails in PyTorch.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from archgen import load_module  # noqa: E402
from realrun import linted, progression_edges, runs, square_sample  # noqa: E402

from archlint.api import lint  # noqa: E402
from archlint.frontends.torch.symbolic import input_leaves  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted((ROOT / "fixtures" / "real").glob("*.py"))
# fixtures/sizes and fixtures/models get the stronger check (the admissible set equals real runs
# at every size) in the fast suite: test_symbolic_sizes.py and test_sizes_fixtures.py
FIXTURES = sorted((ROOT / "fixtures" / "zoo").glob("*.py"))


def _report(path: Path):
    return linted(path)


class _RealModel:
    """A model of a fixture file, run for real at a square size on a fresh copy."""

    def __init__(self, path: Path, report) -> None:
        module = load_module(path, f"_real_{path.stem}")
        obj = getattr(module, report.model)
        self.model = (obj() if isinstance(obj, type) else obj).eval()
        self.args = getattr(module, "example_input", None)
        self.kwargs = dict(getattr(module, "example_kwargs", None) or {})
        if self.args is None and not self.kwargs:
            self.args = tuple(torch.zeros(s) for s in report.input_shapes)
        elif isinstance(self.args, torch.Tensor):
            self.args = (self.args,)
        self.args = tuple(self.args or ())
        tensors = [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]
        self.leaves = input_leaves([tuple(t.shape) for t in tensors], [t.dtype for t in tensors])
        self.rank = max(len(t.shape) for t in tensors)
        self._seen: dict[int, bool | None] = {}

    def runs(self, n: int) -> bool | None:
        """Whether forward works at H = W (= D) = n; None when an input has no whole size.
        Each size runs once: both tests of this module ask for the same sizes."""
        if n not in self._seen:
            self._seen[n] = self._run(n)
        return self._seen[n]

    def _run(self, n: int) -> bool | None:
        point = {"height": n, "width": n, "depth": n, "length": n}
        sized = iter(self.leaves)

        def resized(value):
            if not isinstance(value, torch.Tensor):
                return value
            leaf = next(sized)
            shape = [leaf.size_at(i, point) for i in range(len(leaf.shape))]
            return None if None in shape else torch.zeros(shape, dtype=value.dtype)

        args = tuple(resized(a) for a in self.args)
        kwargs = {k: resized(v) for k, v in self.kwargs.items()}
        if any(v is None for v in (*args, *kwargs.values())):
            return None
        return runs(copy.deepcopy(self.model), *args, **kwargs)


_REAL_MODELS: dict[tuple[Path, str], _RealModel] = {}


def _real_model(path: Path, report) -> _RealModel:
    """Built once per model for the whole module (construction and results are shared)."""
    key = (path, report.model)
    if key not in _REAL_MODELS:
        _REAL_MODELS[key] = _RealModel(path, report)
    return _REAL_MODELS[key]


def _sizes(table) -> tuple[np.ndarray, np.ndarray, int]:
    lo, hi = table["range"]
    return (expand_progressions(table["square"], lo, hi),
            expand_progressions(table["undecided"]["square"], lo, hi), lo)


def _boundaries(ok: np.ndarray, lo: int, upto: int) -> list[int]:
    """Sizes up to ``upto`` where the claimed set changes (both sides of each edge)."""
    edges = np.flatnonzero(ok[1:upto - lo + 1] != ok[:upto - lo]) + lo
    return sorted({int(e) for e in edges} | {int(e) + 1 for e in edges})


def _assert_equal_to_real(path: Path, sizes=None) -> list[int]:
    """The claimed set equals real runs at ``sizes`` (default: the principled sample); returns
    the sizes compared."""
    compared: list[int] = []
    for report in _report(path):
        assert report.error is None, report.error
        table = report.admissible_sizes
        ok, undecided, lo = _sizes(table)
        assert not (ok & undecided).any()
        if undecided.any():  # honest: the text names the undecided sizes and why
            assert "undecided" in report.sizes_summary and "(" in report.sizes_summary, \
                report.sizes_summary
            assert not table["exact"]
        real = _real_model(path, report)
        if sizes is not None:
            sample = sorted(set(sizes) | set(_boundaries(ok, lo, 256)))
        elif real.rank <= 4:
            sample = square_sample(table, real.model, every_upto=64, top=160, edges_upto=256)
        else:  # 3-D: every size 1..40
            sample = square_sample(table, real.model, every_upto=40, top=40, edges_upto=40)
        wrong = []
        for n in sample:
            if not lo <= n < lo + len(ok) or undecided[n - lo]:
                continue
            works = real.runs(n)
            if works is not None and works != bool(ok[n - lo]):
                wrong.append((n, bool(ok[n - lo]), works))
        assert not wrong, f"{path.name}:{report.model} (size, archlint, PyTorch): {wrong}; " \
                          f"{report.sizes_summary}"
        compared += sample
    return compared


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_network_sizes_equal_real_runs(path):
    _assert_equal_to_real(path)


def test_real_convnext_sizes_equal_real_runs():
    """The fast representative: a Hugging Face ConvNeXt, sizes 1..64 and every edge."""
    path = ROOT / "fixtures" / "real" / "hf_convnext.py"
    _assert_equal_to_real(path, list(range(1, 65)))
    (report,) = _report(path)
    assert report.admissible_sizes["exact"]


def test_keyword_input_gets_exact_sizes():
    """``example_kwargs = {"pixel_values": ...}`` runs symbolically: a ViT with a learned
    position embedding for 64x64 takes exactly 64."""
    (report,) = _report(ROOT / "fixtures" / "real" / "hf_vit.py")
    table = report.admissible_sizes
    assert table["exact"], report.sizes_summary
    assert table["square"] == [{"start": 64, "stop": 65, "step": 1}]


@pytest.mark.slow
@pytest.mark.parametrize("path", [*REAL, *FIXTURES], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_admissible_size_fails_in_pytorch(path):
    """Every size a model's JSON lists as admissible (sampled: the smallest, the first and last
    size of every claimed progression, and up to 24 more in 1..160) runs in PyTorch."""
    for report in _report(path):
        if report.graph is None or report.admissible_sizes is None:
            continue
        ok, _, lo = _sizes(report.admissible_sizes)
        try:
            real = _real_model(path, report)
        except (AttributeError, TypeError):  # a model built from config arguments
            continue
        upto = 160 if real.rank <= 4 else 40
        claimed = [int(n) + lo for n in np.flatnonzero(ok[:upto - lo + 1])]
        if not claimed:
            continue
        step = max(1, len(claimed) // 24)
        edges = progression_edges(report.admissible_sizes["square"], upto)
        sample = set(claimed[::step]) | {claimed[0]} | (edges & set(claimed))
        failing = [n for n in sorted(sample) if real.runs(n) is False]
        assert not failing, f"{path.name}:{report.model} admissible but PyTorch fails at {failing}"


class _HalfSizeGuide(torch.nn.Module):
    """Two inputs: an image and a guide at half its size, added after a 2x2 pool."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.MaxPool2d(2)

    def forward(self, x, guide):
        return self.pool(x) + guide


def test_second_input_moves_in_proportion():
    """A guide given at half the image's size takes n/2: even n run, odd n have no guide size
    (undecided, never admissible), and the batch moves both inputs."""
    report = lint(_HalfSizeGuide(), example_inputs=(torch.zeros(2, 3, 16, 16),
                                                    torch.zeros(2, 3, 8, 8))).models[0]
    table = report.admissible_sizes
    lo, hi = table["range"]
    ok = expand_progressions(table["square"], lo, hi)
    undecided = expand_progressions(table["undecided"]["square"], lo, hi)
    model = _HalfSizeGuide()
    for n in range(1, 41):
        if n % 2:
            assert undecided[n - lo] and not ok[n - lo], n
            continue
        try:
            model(torch.zeros(2, 3, n, n), torch.zeros(2, 3, n // 2, n // 2))
            works = True
        except RuntimeError:
            works = False
        assert bool(ok[n - lo]) == works, n
    assert expand_progressions(table["batch"], lo, hi)[:8].all()
