"""archlint's peak memory does not grow with the input resolution (zoo ResNet-50, whole process).

    python bench/memory.py [--runs N] [--quick] [--sizes 224,2048]

archlint never allocates activations (meta/fake tensors and formulas), so its peak RSS at 2048x2048
should match the one at 224x224. The two resolutions are interleaved run by run, and the ratio
is taken run by run (largest size over smallest).

Target: peak RSS at 2048 within 15% of the one at 224 (ratio <= 1.15).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import REPO, Contestant, Row, Spread  # noqa: E402

BENCH = "memory"
ZOO_FILE = REPO / "fixtures" / "zoo" / "resnet.py"
FACTORY = "resnet50"
MAX_GROWTH = 1.15


def lint_contestant(size: int, zoo_file: Path, factory: str) -> Contestant:
    return Contestant(
        f"archlint {size}",
        harness.archlint_cmd(str(zoo_file), "--model", factory,
                             "--input-shape", f"1,3,{size},{size}", "--format", "json"),
        ok=harness.ARCHLINT_OK,
    )


def run(args) -> tuple[list[Row], list[str]]:
    sizes = sorted(args.sizes or [224, 2048])
    if len(sizes) < 2:
        raise SystemExit("--sizes needs at least two resolutions")
    model = args.model
    contestants = [lint_contestant(s, args.model_file, model) for s in sizes]
    harness.progress(f"{BENCH}: {model} at {', '.join(map(str, sizes))}")
    harness.interleave(contestants, harness.runs_of(args), args.warmup, progress=harness.progress)
    failure = harness.first_error(contestants)
    if failure is not None:
        return [harness.error_row(BENCH, f"{model} peak RSS", failure)], []

    smallest = contestants[0]
    rows = []
    for size, c in zip(sizes[1:], contestants[1:]):
        growth = harness.paired_ratios(c.rss(), smallest.rss())
        rows.append(Row(
            BENCH, f"{model} peak RSS {size} vs {sizes[0]}",
            Spread.of(c.rss()).fmt(" MiB", 0), Spread.of(smallest.rss()).fmt(" MiB", 0),
            growth.fmt("x", 3), f"<= {MAX_GROWTH}x",
            harness.verdict(growth.median <= MAX_GROWTH), harness.shell_line(c.cmd)))
    details = [harness.describe(c) for c in contestants]
    return rows, details


def build_parser():
    parser = harness.base_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=2)
    parser.add_argument("--sizes", type=harness.parse_ints,
                        help="input resolutions, smallest is the reference (default 224,2048)")
    parser.add_argument("--model-file", type=Path, default=ZOO_FILE,
                        help="the .py holding the model (default fixtures/zoo/resnet.py)")
    parser.add_argument("--model", default=FACTORY,
                        help="a zero-argument factory or class in it (default resnet50)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
