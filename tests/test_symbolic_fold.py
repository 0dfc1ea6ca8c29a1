"""Symbolic ``F.unfold`` / ``F.fold`` (archlint/frontends/torch/symbolic_fold.py) against PyTorch
run for real.

1. The formula path directly, over a grid of geometries (kernel, stride, padding, dilation) and
   sizes, failing ones included: traced once per size with the sizes as symbols, the guards it
   records must decide every other size of the grid as PyTorch does (where they all hold, a real
   run fails if the traced one failed, else gives the traced shape at that size), and no symbol
   is pinned to a value.
2. Whole models: the MobileViT-style fixture and a fold whose block count matches only at odd
   sizes get exact admissible sets equal to real runs.
"""

from __future__ import annotations

import itertools

import sympy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from archlint.api import lint  # noqa: E402
from archlint.frontends.torch import symbolic_fold  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402
from realrun import model_from_file, runs_at  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

GEOMETRIES = [
    {"kernel_size": 2, "stride": 2},
    {"kernel_size": 3},
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": (2, 3), "stride": (1, 2), "padding": (0, 1), "dilation": (2, 1)},
    {"kernel_size": 3, "dilation": 2, "padding": 2, "stride": 3},
]
SIZES = range(1, 11)


def _symbolic(shape, dynamic):
    """A fake tensor of ``shape`` whose dims flagged in ``dynamic`` are symbols, its env."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    context = StatelessSymbolicContext(
        dynamic_sizes=[DimDynamic.DYNAMIC if d else DimDynamic.STATIC for d in dynamic])
    return mode.from_tensor(torch.empty(shape, device="meta"), symbolic_context=context), env, mode


def _traced(call, shape, dynamic):
    """(output shape as expressions or None when it raised, guard expressions, symbols of the
    input dims, their value ranges)."""
    x, env, mode = _symbolic(shape, dynamic)
    symbols = [s.node.expr if isinstance(s, torch.SymInt) else None for s in x.shape]
    with mode:
        try:
            out = call(x)
            shape_out = [s.node.expr if isinstance(s, torch.SymInt) else s for s in out.shape]
        except RuntimeError:
            shape_out = None
    if shape_out is not None:  # no size pinned to its value (a failing check may narrow one)
        assert not any(v.is_number for v in env.replacements.values()), env.replacements
    # a symbol stands for the sizes in its range only (0 and 1 are literals): a range fact
    # decides a check without a guard, so it is part of what the trace assumed
    ranges = [env.var_to_range[s] if s is not None else None for s in symbols]
    guards = [g.expr for g in env.guards] + [sympy.Eq(s, v) for s, v in env.replacements.items()]
    return shape_out, guards, symbols, ranges


def _real(call, shape):
    try:
        return list(call(torch.zeros(shape)).shape)
    except RuntimeError:
        return None


def _agree(call_sym, call_real, shapes, dynamic):
    """Trace at each shape; every shape whose sizes satisfy the guards must behave alike."""
    checked = 0
    for traced_at in shapes:
        out, guards, symbols, ranges = _traced(call_sym, traced_at, dynamic)
        assert (out is None) == (_real(call_real, traced_at) is None), traced_at
        for other in shapes:
            subs = {}
            for sym, n, was, rng in zip(symbols, other, traced_at, ranges):
                if sym is None and n != was or rng is not None and not rng.lower <= n <= rng.upper:
                    break
                if sym is not None:
                    if subs.get(sym, n) != n:
                        break
                    subs[sym] = n
            else:
                if not all(bool(g.subs(subs)) for g in guards):
                    continue
                want = _real(call_real, other)
                got = None if out is None else [int(e.subs(subs)) if hasattr(e, "subs") else e
                                                for e in out]
                assert got == want, (traced_at, other, guards)
                checked += 1
    return checked


@pytest.mark.parametrize("geo", GEOMETRIES, ids=str)
@pytest.mark.parametrize("batched", [True, False])
def test_unfold_formula_equals_pytorch(geo, batched):
    lead = (2, 3) if batched else (3,)
    shapes = [(*lead, h, w) for h, w in itertools.product(SIZES, (1, 4, 7, 8))]
    dynamic = [False] * len(lead) + [True, True]
    checked = _agree(lambda x: symbolic_fold.unfold((x,), dict(geo)),
                     lambda x: F.unfold(x, **geo), shapes, dynamic)
    assert checked > len(shapes)  # guards decided sizes besides the traced one


@pytest.mark.parametrize("geo", GEOMETRIES, ids=str)
@pytest.mark.parametrize("batched", [True, False])
def test_fold_formula_equals_pytorch(geo, batched):
    """The block count L and the output size vary together; L wrong by one, or channels not a
    multiple of kh*kw, must fail as in PyTorch. The output size comes from a symbolic tensor's
    shape (as ``output_size=x.shape[-2:]``)."""
    k = geo["kernel_size"]
    kk = k[0] * k[1] if isinstance(k, tuple) else k * k
    for planes in (2 * kk, 2 * kk + 1):
        shapes = []
        for h, w in itertools.product(SIZES, (3, 8)):
            blocks = [(n + 2 * p - d * (kn - 1) - 1) // s + 1 for n, kn, s, p, d in zip(
                (h, w), *(_pair(geo.get(key, dflt)) for key, dflt in (
                    ("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1))))]
            for length in {n for n in (blocks[0] * blocks[1], blocks[0] * blocks[1] + 1) if n >= 1}:
                shapes.append((2, planes, length, h, w) if batched else (planes, length, h, w))
        lead = 2 if batched else 1

        def sym(t, lead=lead):
            cols = t.new_empty(t.shape[:lead + 1])
            return symbolic_fold.fold((cols,), {"output_size": t.shape[lead + 1:], **geo})

        def real(t, lead=lead):
            return F.fold(torch.zeros(t.shape[:lead + 1]), t.shape[lead + 1:], **geo)

        dynamic = [False] * lead + [True, True, True]
        assert _agree(sym, real, shapes, dynamic) > len(shapes)


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def test_literal_sizes_keep_pytorchs_kernel(monkeypatch):
    """Without a symbol the formula path is not taken: PyTorch's op runs."""
    called = []
    monkeypatch.setattr(symbolic_fold, "_check_geometry", lambda *a: called.append(a))
    x, _, mode = _symbolic((1, 3, 6, 6), [False] * 4)
    with mode:
        out = symbolic_fold.unfold((x, 2), {})
        back = symbolic_fold.fold((out,), {"output_size": (6, 6), "kernel_size": 2})
    assert list(out.shape) == [1, 12, 25] and list(back.shape) == [1, 3, 6, 6] and not called


# -- whole models -------------------------------------------------------------------------------


def _assert_exact(report, model, sizes, shape_at):
    table = report.admissible_sizes
    assert table["exact"], report.sizes_summary
    lo, hi = table["range"]
    ok = expand_progressions(table["square"], lo, hi)
    wrong = [n for n in sizes if bool(ok[n - lo]) != runs_at(model, shape_at(n))]
    assert not wrong, (report.sizes_summary, wrong[:10])


def test_unfold_fold_fixture_is_exact_at_every_square_size():
    path = ROOT / "fixtures" / "transformers" / "unfold_fold.py"
    (report,) = lint(str(path)).models
    model = model_from_file(path, report.model)
    _assert_exact(report, model, range(1, 161), lambda n: (1, 3, n, n))
    lo, hi = report.admissible_sizes["range"]
    for axis in ("height", "width"):  # the other axis at the example's 32
        ok = expand_progressions(report.admissible_sizes[axis], lo, hi)
        for n in range(1, 41):
            shape = (1, 3, n, 32) if axis == "height" else (1, 3, 32, n)
            assert bool(ok[n - lo]) == runs_at(model, shape), (axis, n)


class OddOnlyFold(torch.nn.Module):
    """unfold 3x3 / stride 2 and fold 2x2 / stride 2 to the input size: the block counts agree
    only at odd sizes ((n - 3) // 2 + 1 == n // 2), and 4 * 9 channels are 9 planes of 2x2.
    ``modules``: the same with nn.Unfold / nn.Fold (the fold's size fixed at 33x33)."""

    def __init__(self, modules=False):
        super().__init__()
        self.unfold = torch.nn.Unfold(3, stride=2) if modules else None
        self.fold = torch.nn.Fold((33, 33), 2, stride=2) if modules else None

    def forward(self, x):
        if self.unfold is not None:
            return self.fold(self.unfold(x))
        cols = F.unfold(x, kernel_size=3, stride=2)
        return F.fold(cols, output_size=x.shape[-2:], kernel_size=2, stride=2)


def test_fold_block_count_guard_is_exact():
    model = OddOnlyFold()
    (report,) = lint(model, torch.zeros(1, 4, 33, 33)).models
    _assert_exact(report, model, range(1, 161), lambda n: (1, 4, n, n))
    ok = expand_progressions(report.admissible_sizes["square"], *report.admissible_sizes["range"])
    assert ok[2] and not ok[3] and ok[4]  # 3 runs, 4 fails, 5 runs


def test_unfold_and_fold_modules_are_exact():
    """nn.Fold to a literal 33x33: only sizes whose 3x3 / stride 2 blocks are 16 x 16 run."""
    model = OddOnlyFold(modules=True)
    (report,) = lint(model, torch.zeros(1, 4, 33, 33)).models
    _assert_exact(report, model, range(1, 161), lambda n: (1, 4, n, n))
    ok = expand_progressions(report.admissible_sizes["square"], *report.admissible_sizes["range"])
    assert [n for n in range(1, 161) if ok[n - 1]] == [33, 34]
