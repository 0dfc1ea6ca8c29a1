"""How archlint's ONNX path scales with graph size, next to ONNX shape inference alone.

    python bench/onnx_scale.py [--runs N] [--quick] [--nodes 1000,10000,30000,100000]

Synthetic residual chains (Conv -> Relu -> Add blocks, one shared tiny weight; see
synthetic_onnx.py) are written to a temporary folder. For each size, two whole processes run,
interleaved: ``archlint FILE.onnx --format json`` and the floor of any ONNX shape tool, a process
that only runs ``onnx.load`` and ``onnx.shape_inference.infer_shapes(strict_mode=True,
data_prop=True)`` (what archlint's ONNX frontend runs first) on the same file.

Reported per size: time, time per node, peak RSS and the memory per node above the floor's;
archlint over the floor; and the growth between sizes, taken run by run.

Targets: 30k nodes within 2.0x of the floor; time(100k) / time(30k) <= 3.6 (3.33 is linear);
peak memory < 4 KiB per node above the floor at 30k and 100k nodes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import PYTHON, Contestant, Row, Spread  # noqa: E402
from synthetic_onnx import write_in_subprocess  # noqa: E402

BENCH = "onnx_scale"
MAX_RATIO_30K = 2.0
#: growth targets (small, large) -> the most time(large) / time(small) may be
MAX_GROWTH = {(30_000, 100_000): 3.6}
MAX_KIB_PER_NODE = 4.0
#: sizes whose memory per node is held to MAX_KIB_PER_NODE (below, fixed costs dominate)
MEMORY_CHECKED = (30_000, 100_000)

INFER_PROGRAM = """
import sys
import onnx
model = onnx.load(sys.argv[1], load_external_data=False)
inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
print(len(inferred.graph.value_info))
"""


def node_label(nodes: int) -> str:
    return f"{nodes // 1000}k" if nodes >= 1000 and nodes % 1000 == 0 else str(nodes)


def contestants_for(path: Path, nodes: int) -> tuple[Contestant, Contestant]:
    label = node_label(nodes)
    ours = Contestant(f"archlint {label}", harness.archlint_cmd(str(path), "--format", "json"),
                      ok=harness.ARCHLINT_OK, timeout_s=300)
    peer = Contestant(f"infer_shapes {label}", [PYTHON, "-c", INFER_PROGRAM, str(path)],
                      timeout_s=300)
    return ours, peer


def size_rows(nodes: int, ours: Contestant, peer: Contestant) -> list[Row]:
    case = f"{node_label(nodes)} nodes"
    if ours.error or peer.error:
        return [harness.error_row(BENCH, case, harness.BenchError(ours.error or peer.error))]
    t = Spread.of(ours.times())
    ratio = harness.paired_ratios(ours.times(), peer.times())
    checked = nodes == 30_000
    rows = [Row(BENCH, f"{case} time", t.fmt(" s"), Spread.of(peer.times()).fmt(" s"),
                ratio.fmt("x"), f"<= {MAX_RATIO_30K:g}x floor" if checked else "-",
                harness.verdict(ratio.median <= MAX_RATIO_30K) if checked else "-",
                harness.shell_line(ours.cmd))]
    extra_kib = [(a - b) * 1024 / nodes for a, b in zip(ours.rss(), peer.rss())]
    per_node = Spread.of(extra_kib)
    checked = nodes in MEMORY_CHECKED
    rows.append(Row(BENCH, f"{case} peak RSS",
                    f"{Spread.of(ours.rss()).fmt(' MiB', 0)}, {per_node.fmt(' KiB', 1)}/node above",
                    Spread.of(peer.rss()).fmt(" MiB", 0),
                    harness.paired_ratios(ours.rss(), peer.rss()).fmt("x"),
                    f"< {MAX_KIB_PER_NODE:g} KiB/node" if checked else "-",
                    harness.verdict(per_node.median < MAX_KIB_PER_NODE) if checked else "-"))
    rows.append(Row(BENCH, f"{case} time per node", f"{t.median / nodes * 1e6:.0f} us",
                    f"{Spread.of(peer.times()).median / nodes * 1e6:.0f} us"))
    return rows


def growth_row(small: tuple[int, Contestant], large: tuple[int, Contestant]) -> Row:
    (n_small, c_small), (n_large, c_large) = small, large
    growth = harness.paired_ratios(c_large.times(), c_small.times())
    limit = MAX_GROWTH.get((n_small, n_large))
    return Row(BENCH, f"time {node_label(n_large)} / {node_label(n_small)}",
               growth.fmt("x"), "-", f"{n_large / n_small:g}x nodes",
               f"<= {limit}x" if limit else "-",
               harness.verdict(growth.median <= limit) if limit else "-")


def run(args) -> tuple[list[Row], list[str]]:
    sizes = sorted(args.nodes or ([1_000, 10_000, 30_000] if args.quick
                                  else [1_000, 10_000, 30_000, 100_000]))
    with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp:
        harness.progress(f"{BENCH}: writing {', '.join(map(str, sizes))}-node graphs")
        paths = write_in_subprocess(Path(tmp), sizes)
        pairs = {n: contestants_for(paths[n], n) for n in sizes}
        everyone = [c for pair in pairs.values() for c in pair]
        harness.interleave(everyone, harness.runs_of(args), args.warmup, progress=harness.progress)

    rows: list[Row] = []
    for n in sizes:
        rows += size_rows(n, *pairs[n])
    measured = [(n, pairs[n][0]) for n in sizes if not pairs[n][0].error]
    for small, large in zip(measured, measured[1:]):
        rows.append(growth_row(small, large))
    return rows, [harness.describe(c) for c in everyone]


def build_parser():
    parser = harness.base_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument("--nodes", type=harness.parse_ints,
                        help="graph sizes in ONNX nodes (default 1000,10000,30000,100000; "
                        "without 100000 with --quick)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
