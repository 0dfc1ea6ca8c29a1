"""Every benchmark in bench/, in its --quick form by default, as one table.

    python bench/run_all.py [--full] [--runs N] [--only startup,sweep] [--markdown] [--check]

Each benchmark still runs its contestants as separate, interleaved processes; this script only
collects their rows. ``--full`` runs the full sizes and run counts instead of --quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

#: Cheapest first, so a broken pipeline shows up before the long runs.
BENCHMARKS = ("startup", "sweep", "memory", "onnx_scale", "transformer_onnx", "vs_torchinfo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full sizes and runs, not --quick")
    parser.add_argument("--runs", type=int, help="measured runs per contestant, for every bench")
    parser.add_argument("--warmup", type=int, help="unmeasured runs first, for every bench")
    parser.add_argument("--only", type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
                        help=f"a comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="also write all rows as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser


def run_one(name: str, args: argparse.Namespace) -> tuple[list[harness.Row], list[str], float]:
    module = importlib.import_module(name)
    argv = [] if args.full else ["--quick"]
    if args.runs is not None:
        argv += ["--runs", str(args.runs)]
    if args.warmup is not None:
        argv += ["--warmup", str(args.warmup)]
    start = time.perf_counter()
    try:
        rows, details = module.run(module.build_parser().parse_args(argv))
    except Exception as exc:  # one broken bench must not hide the others
        rows, details = [harness.error_row(name, "all", exc)], []
    return rows, details, time.perf_counter() - start


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = args.only or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}")
    rows: list[harness.Row] = []
    details: list[str] = []
    for name in names:
        bench_rows, bench_details, seconds = run_one(name, args)
        harness.progress(f"{name}: done in {seconds:.0f} s")
        rows += bench_rows
        details += bench_details
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
