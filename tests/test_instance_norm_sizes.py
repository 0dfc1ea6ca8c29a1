"""InstanceNorm's one-spatial-element check (made by F.instance_norm in Python, skipped by meta
kernels) is in the admissible set, on both paths (per-op formulas and the symbolic engine);
fixtures/sizes/instance_norm.py is also swept 1..160 against real runs by test_symbolic_sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from archlint.api import lint  # noqa: E402
from archlint.passes.progressions import expand_progressions  # noqa: E402
from archgen import load_module  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "sizes" / "instance_norm.py"


def _runs(model, n: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, n, n))
        return True
    except Exception:
        return False


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sizes_that_leave_one_element_are_excluded_as_pytorch_does():
    module = load_module(FIXTURE, "_instance_norm")
    reports = {r.model: r for r in lint(str(FIXTURE)).models}
    assert set(reports) == {"DownNorm", "DownNormTracked", "FunctionalNorm", "NormThenResize"}
    for name, report in reports.items():
        table = report.admissible_sizes
        assert table["exact"], (name, report.sizes_summary)
        ok = expand_progressions(table["square"], *table["range"])
        model = getattr(module, name)().eval()
        for n in range(1, 40):
            assert bool(ok[n - 1]) == _runs(model, n), (name, n)
        # 8 -> 1x1 fails unless running statistics are tracked; 9 -> 2x2 runs
        assert bool(ok[8 - 1]) == (name == "DownNormTracked") and ok[9 - 1]
