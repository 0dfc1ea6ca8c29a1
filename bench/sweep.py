"""What the input-size sweep (every size in 1..4096 at once) adds to a lint.

    python bench/sweep.py [--runs N] [--quick] [--onnx-nodes 10000]

The sweep cannot be switched off, so the baseline is the same lint with ``--sizes-range S,S``:
a sweep over the one example size, which leaves every other pass and rule as it was. Two models:
the zoo's ResNet-50 at 224x224 and a synthetic residual ONNX chain (synthetic_onnx.py), whose
sweep work grows with the node count while nothing heavy is imported.

Two measures, both interleaved run by run:

- whole processes (the target): ``archlint ...`` vs ``archlint ... --sizes-range S,S``;
- in one process (for the record): ``archlint.api.lint()`` called repeatedly after one warm-up,
  alternating the two settings, which leaves out interpreter start, imports and model loading.

Target: the default sweep adds < 50% to the whole-process time (ratio < 1.5).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import PYTHON, REPO, Contestant, Row, Spread  # noqa: E402
from synthetic_onnx import SPATIAL, write_in_subprocess  # noqa: E402

BENCH = "sweep"
MAX_RATIO = 1.5
ZOO_FILE = REPO / "fixtures" / "zoo" / "resnet.py"

#: Times lint() in one process: argv = path, model ('' for none), example size, input shape
#: ('' for the file's own), runs. Prints {"single": [...], "sweep": [...]} in seconds.
IN_PROCESS_PROGRAM = """
import json, sys, time
from archlint.api import lint
path, model, size, shape, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
options = {}
if model:
    options["model"] = model
if shape:
    options["input_shapes"] = (tuple(int(v) for v in shape.split(",")),)
settings = {"single": {"sizes_range": (size, size)}, "sweep": {}}
for extra in settings.values():
    lint(path, **options, **extra)  # warm-up: imports, first trace
times = {name: [] for name in settings}
for i in range(runs):
    for name in (list(settings) if i % 2 == 0 else list(reversed(list(settings)))):
        start = time.perf_counter()
        report = lint(path, **options, **settings[name])
        times[name].append(time.perf_counter() - start)
        if any(m.error for m in report.models):
            sys.exit("lint failed: " + "; ".join(m.error for m in report.models if m.error))
print(json.dumps(times))
"""


def process_rows(case: str, args_: list[str], size: int, runs: int, warmup: int,
                 details: list[str]) -> list[Row]:
    sweep = Contestant(f"{case} sweep", harness.archlint_cmd(*args_), ok=harness.ARCHLINT_OK)
    single = Contestant(f"{case} single",
                        harness.archlint_cmd(*args_, "--sizes-range", f"{size},{size}"),
                        ok=harness.ARCHLINT_OK)
    harness.interleave([sweep, single], runs, warmup, progress=harness.progress)
    details += [harness.describe(sweep), harness.describe(single)]
    failure = harness.first_error([sweep, single])
    if failure is not None:
        return [harness.error_row(BENCH, f"{case} process", failure)]
    ratio = harness.paired_ratios(sweep.times(), single.times())
    return [
        Row(BENCH, f"{case} process time", Spread.of(sweep.times()).fmt(" s"),
            Spread.of(single.times()).fmt(" s"), ratio.fmt("x"), f"< {MAX_RATIO}x",
            harness.verdict(ratio.median < MAX_RATIO), harness.shell_line(sweep.cmd)),
        Row(BENCH, f"{case} process peak RSS", Spread.of(sweep.rss()).fmt(" MiB", 0),
            Spread.of(single.rss()).fmt(" MiB", 0),
            harness.paired_ratios(sweep.rss(), single.rss()).fmt("x", 3)),
    ]


def in_process_row(case: str, path: Path, model: str, size: int, shape: str,
                   runs: int) -> Row:
    cmd = [PYTHON, "-c", IN_PROCESS_PROGRAM, str(path), model, str(size), shape, str(runs)]
    try:
        sample = harness.checked(harness.run_process(cmd, timeout_s=600), cmd)
        times = json.loads(sample.stdout.strip().splitlines()[-1])
    except (harness.BenchError, ValueError, IndexError) as exc:
        return harness.error_row(BENCH, f"{case} lint() in process", exc)
    ratio = harness.paired_ratios(times["sweep"], times["single"])
    return Row(BENCH, f"{case} lint() in process", Spread.of(times["sweep"]).fmt(" s", 3),
               Spread.of(times["single"]).fmt(" s", 3), ratio.fmt("x"), "(for the record)", "-")


def run(args) -> tuple[list[Row], list[str]]:
    runs = harness.runs_of(args)
    nodes = args.onnx_nodes or (3_000 if args.quick else 10_000)
    rows: list[Row] = []
    details: list[str] = []
    if "resnet50" in args.cases:
        shape = "1,3,224,224"
        harness.progress(f"{BENCH}: resnet50 at 224")
        resnet_args = [str(ZOO_FILE), "--model", "resnet50", "--input-shape", shape,
                       "--format", "json"]
        rows += process_rows("resnet50 224", resnet_args, 224, runs, args.warmup, details)
        rows.append(in_process_row("resnet50 224", ZOO_FILE, "resnet50", 224, shape,
                                   args.in_process_runs or max(runs, 3)))
    if "onnx" not in args.cases:
        return rows, details
    with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp:
        onnx_file = write_in_subprocess(Path(tmp), [nodes])[nodes]
        case = f"onnx {nodes} nodes"
        harness.progress(f"{BENCH}: {case}")
        rows += process_rows(case, [str(onnx_file), "--format", "json"], SPATIAL, runs,
                             args.warmup, details)
        rows.append(in_process_row(case, onnx_file, "", SPATIAL, "", args.in_process_runs
                                   or max(runs, 3)))
    return rows, details


def build_parser():
    parser = harness.base_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument("--onnx-nodes", type=int,
                        help="size of the synthetic ONNX chain (default 10000; 3000 with --quick)")
    parser.add_argument("--cases", type=lambda s: s.split(","), default=["resnet50", "onnx"],
                        help="which models: resnet50, onnx or both (default resnet50,onnx)")
    parser.add_argument("--in-process-runs", type=int,
                        help="lint() calls per setting in the in-process measure "
                        "(default: --runs, at least 3)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
