"""archlint vs torchinfo on the zoo's ResNet-50, as whole processes, at several resolutions.

    python bench/vs_torchinfo.py [--runs N] [--quick] [--sizes 224,1024,2048] [--floor]

The peer is what a user runs today to see a model's shapes: ``torchinfo.summary(model,
input_size=...)``, which runs a real forward pass with hooks. Both processes import torch and build
the model from fixtures/zoo/resnet.py; archlint is the CLI (``python -m archlint ... --format
json``). A third process only imports torch and builds the model on CPU in a plain script: the
cost neither contestant can avoid. It runs at the smallest resolution (``--floor``: at every one).

Targets: archlint >= 2.5x faster than torchinfo at 1024, >= 5x at 2048; archlint no slower than
importing torch and building the model (archlint / import+build <= 1.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import PYTHON, REPO, Contestant, Row, Spread  # noqa: E402

BENCH = "vs_torchinfo"
ZOO_FILE = REPO / "fixtures" / "zoo" / "resnet.py"
FACTORY = "resnet50"
#: Speed-up targets by resolution (torchinfo time / archlint time).
TARGETS = {1024: 2.5, 2048: 5.0}
#: archlint time / (import torch + build the model) may be at most this.
MAX_FLOOR_RATIO = 1.0

_LOAD_MODEL = """
import importlib.util, sys
import torch
spec = importlib.util.spec_from_file_location("zoo_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = getattr(module, sys.argv[2])()
"""
TORCHINFO_PROGRAM = _LOAD_MODEL + """
from torchinfo import summary
size = int(sys.argv[3])
print(summary(model, input_size=(1, 3, size, size), verbose=0))
"""
FLOOR_PROGRAM = _LOAD_MODEL + "print(type(model).__name__)\n"


def archlint_contestant(size: int, zoo_file: Path, factory: str) -> Contestant:
    return Contestant(
        "archlint",
        harness.archlint_cmd(str(zoo_file), "--model", factory,
                             "--input-shape", f"1,3,{size},{size}", "--format", "json"),
        ok=harness.ARCHLINT_OK,
    )


def torchinfo_contestant(size: int, zoo_file: Path, factory: str) -> Contestant:
    return Contestant("torchinfo",
                      [PYTHON, "-c", TORCHINFO_PROGRAM, str(zoo_file), factory, str(size)],
                      timeout_s=900)


def floor_contestant(zoo_file: Path, factory: str) -> Contestant:
    return Contestant("import+build", [PYTHON, "-c", FLOOR_PROGRAM, str(zoo_file), factory])


def torchinfo_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchinfo") is not None


def measure_size(size: int, runs: int, warmup: int, floor: bool,
                 zoo_file: Path = ZOO_FILE, factory: str = FACTORY) -> tuple[list[Row], list[str]]:
    ours = archlint_contestant(size, zoo_file, factory)
    peer = torchinfo_contestant(size, zoo_file, factory)
    contestants = [ours, peer] + ([floor_contestant(zoo_file, factory)] if floor else [])
    harness.progress(f"{BENCH}: {factory} at {size}x{size}")
    harness.interleave(contestants, runs, warmup, progress=harness.progress)
    failure = harness.first_error(contestants)
    if failure is not None:
        raise failure

    speedup = harness.paired_ratios(peer.times(), ours.times())
    floor_rows = []
    if floor:
        over_floor = harness.paired_ratios(ours.times(), contestants[2].times())
        floor_rows.append(Row(
            BENCH, f"{factory} {size}x{size} vs import+build", Spread.of(ours.times()).fmt(" s"),
            Spread.of(contestants[2].times()).fmt(" s"), over_floor.fmt("x"),
            f"<= {MAX_FLOOR_RATIO:g}x", harness.verdict(over_floor.median <= MAX_FLOOR_RATIO),
            harness.shell_line(contestants[2].cmd)))
    rss_ratio = harness.paired_ratios(peer.rss(), ours.rss())
    target = TARGETS.get(size)
    case = f"{factory} {size}x{size}"
    rows = [
        Row(BENCH, f"{case} time", Spread.of(ours.times()).fmt(" s"),
            Spread.of(peer.times()).fmt(" s"), speedup.fmt("x"),
            f">= {target}x faster" if target else "-",
            harness.verdict(speedup.median >= target) if target else "-",
            harness.shell_line(ours.cmd)),
        Row(BENCH, f"{case} peak RSS", Spread.of(ours.rss()).fmt(" MiB", 0),
            Spread.of(peer.rss()).fmt(" MiB", 0), rss_ratio.fmt("x"), "-", "-"),
        *floor_rows,
    ]
    details = [f"{case}, {harness.describe(c)}" for c in contestants]
    return rows, details


def run(args) -> tuple[list[Row], list[str]]:
    if not torchinfo_available():
        return [Row(BENCH, "all", "skipped: torchinfo not installed "
                    "(pip install 'archlint[bench]')")], []
    sizes = args.sizes or ([224, 1024] if args.quick else [224, 1024, 2048])
    rows: list[Row] = []
    details: list[str] = []
    for size in sizes:
        try:
            size_rows, size_details = measure_size(size, harness.runs_of(args), args.warmup,
                                                   args.floor or size == min(sizes),
                                                   args.model_file, args.model)
        except harness.BenchError as exc:
            rows.append(harness.error_row(BENCH, f"{args.model} {size}x{size}", exc))
            continue
        rows += size_rows
        details += size_details
    return rows, details


def build_parser():
    parser = harness.base_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument("--sizes", type=harness.parse_ints,
                        help="input resolutions (default 224,1024,2048; 224,1024 with --quick)")
    parser.add_argument("--model-file", type=Path, default=ZOO_FILE,
                        help="the .py holding the model (default fixtures/zoo/resnet.py)")
    parser.add_argument("--model", default=FACTORY,
                        help="a zero-argument factory or class in it (default resnet50)")
    parser.add_argument("--floor", action="store_true",
                        help="time the process that only imports torch and builds the model at "
                        "every resolution (default: at the smallest)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
