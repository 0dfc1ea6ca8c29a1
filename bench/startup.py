"""archlint's start-up: the commands that must never pay for importing torch.

    python bench/startup.py [--runs N] [--quick]

Whole processes, interleaved with the floor (``python -c pass``, the interpreter alone):

- ``archlint --help``
- ``archlint plain.py``: a .py file that defines no nn.Module (the AST pre-filter's case)
- ``archlint --skip-non-models plain.py``: the same, as the pre-commit hook runs it
- ``archlint tiny.onnx``: a 30-node ONNX graph (the ONNX path never imports torch)

Each command is also run once under ``python -X importtime``, and any ``torch`` module in that
list is a failure.

Targets: --help and the plain .py under 0.3 s (median wall time); no case imports torch.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import PYTHON, Contestant, Row, Spread  # noqa: E402
from synthetic_onnx import write_in_subprocess  # noqa: E402

BENCH = "startup"
MAX_SECONDS = 0.3
ONNX_NODES = 30
#: A file any project has: functions and a plain class, no torch.
PLAIN_SOURCE = '''"""Training helpers: no model in here."""
import os


def learning_rate(step: int, base: float = 0.1) -> float:
    return base * 0.5 ** (step // 30)


class Config:
    depth = 50
    data_dir = os.environ.get("DATA_DIR", "data")
'''
#: One line of ``-X importtime`` output naming a torch module.
_TORCH_IMPORT = re.compile(r"^import time:.*\|\s*torch(\.\S*)?\s*$", re.MULTILINE)


def torch_modules_imported(args: list[str]) -> list[str]:
    """The torch modules ``archlint ARGS`` imports (from ``python -X importtime``)."""
    sample = harness.run_process([PYTHON, "-X", "importtime", "-m", "archlint", *args],
                                 timeout_s=120)
    return [m.group(0).split("|")[-1].strip() for m in _TORCH_IMPORT.finditer(sample.stderr)]


def cases(tmp: Path) -> list[tuple[str, list[str], bool]]:
    """(name, archlint arguments, has a time target) for each start-up case."""
    plain = tmp / "plain.py"
    plain.write_text(PLAIN_SOURCE, encoding="utf-8")
    onnx_file = write_in_subprocess(tmp, [ONNX_NODES])[ONNX_NODES]
    return [
        ("--help", ["--help"], True),
        ("plain .py", [str(plain)], True),
        ("plain .py --skip-non-models", ["--skip-non-models", str(plain)], True),
        (f"{ONNX_NODES}-node .onnx", [str(onnx_file), "--format", "json"], False),
    ]


def run(args) -> tuple[list[Row], list[str]]:
    with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp_name:
        tmp = Path(tmp_name)
        case_list = cases(tmp)
        # A plain .py may be reported as "no model found" (exit 2): that is an answer, not a crash.
        ours = [Contestant(name, harness.archlint_cmd(*argv), ok=(0, 1, 2))
                for name, argv, _ in case_list]
        floor = Contestant("python -c pass", [PYTHON, "-c", "pass"])
        harness.progress(f"{BENCH}: {len(ours)} commands and the interpreter floor")
        harness.interleave([floor, *ours], harness.runs_of(args), args.warmup,
                           progress=harness.progress)
        torch_by_case = {name: torch_modules_imported(argv) for name, argv, _ in case_list}

    rows: list[Row] = []
    if floor.error:
        return [harness.error_row(BENCH, "python -c pass", harness.BenchError(floor.error))], []
    for (name, _, timed), c in zip(case_list, ours):
        if c.error:
            rows.append(harness.error_row(BENCH, name, harness.BenchError(c.error)))
            continue
        crashed = any("Traceback (most recent call last)" in s.stderr for s in c.samples)
        wall = Spread.of(c.times())
        rows.append(Row(
            BENCH, f"{name} time", wall.fmt(" s"), Spread.of(floor.times()).fmt(" s"),
            harness.paired_ratios(c.times(), floor.times()).fmt("x"),
            f"< {MAX_SECONDS} s" if timed else "-",
            harness.verdict(wall.median < MAX_SECONDS) if timed else "-",
            harness.shell_line(c.cmd)))
        torch_modules = torch_by_case[name]
        rows.append(Row(
            BENCH, f"{name} imports torch",
            f"yes ({len(torch_modules)} modules)" if torch_modules else "no",
            target="no", verdict=harness.verdict(not torch_modules)))
        if crashed:
            rows.append(Row(BENCH, f"{name} traceback", "yes", target="no", verdict="MISSED"))
    details = [harness.describe(c) for c in (floor, *ours)]
    return rows, details


def build_parser():
    return harness.base_parser(__doc__.splitlines()[0], default_runs=10, quick_runs=3)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
