"""Differential test: archlint's static predictions against PyTorch's real forward.

Hypothesis writes random CNNs as real model files (tests/archgen.py) and lints them the way a user
does (``archlint.api.lint(path)``). PyTorch's real forward on CPU is the truth:

* if PyTorch raises (construction or forward), or a merge silently broadcasts a 1-pixel branch over
  a wider one, archlint must report an error-severity finding or a report error;
* otherwise archlint must report no error (other than ``archgen.NOT_RUNTIME_ERRORS``: errors about
  what the output looks like, which a forward pass cannot judge), and its shapes must equal the real ones at every layer
  (forward hooks, keyed by module qualname == ``location.node``), at every merge and resize (in call
  order), and at the output;
* the input-size sweep (``g.graph["sizes"]``) must agree with real runs at a handful of other sizes:
  admissible exactly where PyTorch runs without a silent broadcast, with the same layer sizes.

A disagreement is an engine bug. Failing examples go to fixtures/regressions/*.py (the source the
assertion message prints), and ``test_regression_fixture`` runs each of them the same way.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archgen
from archlint.api import lint
from archlint.findings import Severity

REGRESSIONS = Path(__file__).resolve().parents[1] / "fixtures" / "regressions"
#: merges and resizes the truth records by call order (see archgen._merge_recorder).
ORDERED_OPS = {"add": "add", "concat": "concat", "upsample": "upsample"}

_module_names = (f"_differential_model_{i}" for i in itertools.count())


# --------------------------------------------------------------------------------------------
# comparing one model file


def disagreements(path: Path, sweep_sizes: tuple[int, ...] = ()) -> list[str]:
    """Every way archlint's report on ``path`` disagrees with PyTorch (empty: they agree)."""
    module = archgen.load_module(path, next(_module_names))
    model_class = getattr(module, archgen.MODEL_CLASS)
    shape = tuple(module.example_input.shape)
    model, construction_error = archgen.build(model_class)
    truth = archgen.real_run(model_class, shape, model) if model is not None else \
        archgen.RealRun(error=construction_error)

    (report,) = lint(path).models
    problems = _verdict_disagreements(report, truth)
    g = report.graph
    if g is None:
        return problems
    problems += _layer_disagreements(g, truth, model)
    if not truth.fails:
        predicted = g.nodes["output"]["shapes"] if "output" in g else None
        if not predicted or predicted[0] != truth.output:
            problems.append(f"output: archlint {predicted and predicted[0]}, PyTorch {truth.output}")
    if model is not None:
        problems += _sweep_disagreements(g, model_class, model, shape, truth, sweep_sizes)
    return problems


def _verdict_disagreements(report, truth: archgen.RealRun) -> list[str]:
    errors = [f for f in report.findings
              if f.severity is Severity.ERROR and f.rule not in archgen.NOT_RUNTIME_ERRORS]
    if truth.fails:
        if report.error is None and not errors:
            return [f"PyTorch fails ({truth.error or truth.broadcast}); archlint reports no error"]
        return []
    out = []
    if report.error is not None:
        out.append(f"archlint could not analyze a model that runs: {report.error}")
    out += [f"false error [{f.rule}] at {f.location.node}: {f.message}" for f in errors]
    return out


def _layer_disagreements(g, truth: archgen.RealRun, model) -> list[str]:
    """Shapes at every layer PyTorch ran (up to where it raised), merges and resizes in order."""
    out = []
    calls: dict[str, int] = {}
    for n in g.nodes:
        qualname = g.nodes[n]["location"].node
        real = truth.module_shapes.get(qualname)
        if real is None or g.nodes[n]["op"] in ("input", "output"):
            continue
        k = calls[qualname] = calls.get(qualname, -1) + 1
        predicted = g.nodes[n]["shapes"]
        if k < len(real) and (not predicted or predicted[0] != real[k]):
            out.append(f"{qualname} ({g.nodes[n]['op']}): archlint {predicted and predicted[0]}, "
                       f"PyTorch {real[k]}")
    if model is not None:
        shown = {g.nodes[n]["location"].node for n in g.nodes}
        for qualname in sorted(archgen.leaf_qualnames(model) & set(truth.module_shapes) - shown):
            out.append(f"layer {qualname} ran in PyTorch but is not in the graph")
    ordered = [n for n in g.nodes if g.nodes[n]["op"] in ORDERED_OPS]
    for i, (kind, real_shape) in enumerate(truth.functional):
        if i >= len(ordered):
            out.append(f"{kind} #{i} {real_shape} ran in PyTorch but the graph has no such op")
            break
        n = ordered[i]
        predicted = g.nodes[n]["shapes"]
        if ORDERED_OPS[g.nodes[n]["op"]] != kind or not predicted or predicted[0] != real_shape:
            out.append(f"{kind} #{i} ({n}, {g.nodes[n]['op']}): archlint "
                       f"{predicted and predicted[0]}, PyTorch {real_shape}")
    return out


def _sweep_disagreements(g, model_class, model, shape, truth, sweep_sizes) -> list[str]:
    sweep = g.graph.get("sizes")
    if sweep is None:
        return ["no input-size sweep (g.graph['sizes'])"]
    out = []
    if not truth.fails and not sweep.complete:
        out.append(f"sweep incomplete on a model that runs: {sweep.unknown[:2]}")
    h, w = shape[2:]
    cases = [("square", n, (n, n)) for n in (h, *sweep_sizes)]
    cases += [("height", n, (n, w)) for n in sweep_sizes[:1]]
    cases += [("width", n, (h, n)) for n in sweep_sizes[1:2]]
    for sweep_name, n, spatial in cases:
        real = archgen.real_run(model_class, shape[:2] + spatial, model)
        admissible = bool(sweep.admissible_for(sweep_name)[n - sweep.lo])
        where = f"sweep {sweep_name} at {spatial[0]}x{spatial[1]}"
        if admissible and real.fails and sweep.complete:
            out.append(f"{where}: admissible, but PyTorch fails ({real.error or real.broadcast})")
        elif not admissible and not real.fails and not _undecided(sweep, sweep_name, n):
            out.append(f"{where}: not admissible (first failure {sweep.first_failure(n, sweep_name)}),"
                       " but PyTorch runs")
        if admissible and not real.fails:
            out += _sweep_size_disagreements(g, sweep, sweep_name, n, real, where)
    return out


def _sweep_size_disagreements(g, sweep, sweep_name, n, real, where) -> list[str]:
    out = []
    for node in g.nodes:
        shapes = real.module_shapes.get(g.nodes[node]["location"].node)
        if not shapes or len(shapes[0]) != 4 or g.nodes[node]["op"] in ("input", "output"):
            continue
        predicted = sweep.spatial(node, sweep_name)
        if predicted is None:
            continue  # unknown is allowed; a wrong number is not
        sizes = tuple(int(a[n - sweep.lo]) for a in predicted)
        if sizes != shapes[0][2:]:
            out.append(f"{where}: {node} sweep says {sizes}, PyTorch {shapes[0][2:]}")
    return out


def assert_agrees(path: Path, sweep_sizes: tuple[int, ...] = ()) -> None:
    problems = disagreements(path, sweep_sizes)
    if problems:
        raise AssertionError(
            "archlint disagrees with PyTorch:\n  " + "\n  ".join(problems)
            + f"\n--- {path.name} (save as fixtures/regressions/<what>.py) ---\n" + path.read_text()
        )


# --------------------------------------------------------------------------------------------
# the tests

DIFFERENTIAL = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples in every CI run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


@DIFFERENTIAL
@given(arch=archgen.architectures(),
       sweep_sizes=st.tuples(st.integers(5, 72), st.integers(5, 72), st.integers(5, 72)))
def test_archlint_agrees_with_pytorch(arch, sweep_sizes, tmp_path_factory):
    path = archgen.write_model(arch, tmp_path_factory.mktemp("differential"))
    assert_agrees(path, sweep_sizes)


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.py")), ids=lambda p: p.stem)
def test_regression_fixture(path):
    assert_agrees(path, (7, 16, 33))


def test_truth_sees_a_silent_broadcast(tmp_path):
    """The oracle itself: a 1-pixel branch added to a 2-pixel one is a failure."""
    path = tmp_path / "m.py"
    path.write_text(
        "import torch\nimport torch.nn as nn\n\n\nclass Generated(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.a = nn.Conv2d(1, 1, 3, stride=2)\n\n"
        "    def forward(self, x):\n        return x + self.a(x)\n"
    )
    module = archgen.load_module(path, next(_module_names))
    assert archgen.real_run(module.Generated, (1, 1, 3, 3)).broadcast
    assert not archgen.real_run(module.Generated, (1, 1, 5, 5)).broadcast  # 5 vs 2: raises
    assert archgen.real_run(module.Generated, (1, 1, 5, 5)).error


def _undecided(sweep, sweep_name: str, n: int) -> bool:
    """A size the sweep claims neither way (JSON "undecided")."""
    undecided = getattr(sweep, "undecided_for", None)
    return bool(undecided(sweep_name)[n - sweep.lo]) if undecided else False
