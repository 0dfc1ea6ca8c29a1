"""Where archlint's time and memory go on one ONNX file: stage by stage, in one process.

    python bench/profile_onnx.py FILE.onnx                 # stage times (no profiler overhead)
    python bench/profile_onnx.py FILE.onnx --cprofile 30   # plus the top 30 functions by own time
    python bench/profile_onnx.py FILE.onnx --memory        # plus tracemalloc's peak per stage
    python bench/profile_onnx.py --nodes 30000             # a synthetic residual chain instead

The stages are the ones ``archlint FILE --format json`` runs: import the onnx frontend, capture
(load, shape inference, building the graph), each pass, every rule, the JSON report. The floor a
user pays anyway (``onnx.load`` + ``infer_shapes(strict_mode=True, data_prop=True)``) is timed
first, in the same process, for scale. Cyclic GC is off, as under the console entry.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Stages:
    def __init__(self, memory: bool):
        self.memory = memory
        self.rows: list[tuple[str, float, float | None]] = []
        self.runs: list[list[tuple[str, float, float | None]]] = []

    @contextmanager
    def stage(self, name: str):
        if self.memory:
            import tracemalloc

            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        start = time.process_time()  # CPU time: steadier than wall time on a shared machine
        yield
        elapsed = time.process_time() - start
        peak = None
        if self.memory:
            import tracemalloc

            peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        self.rows.append((name, elapsed, peak))

    def next_run(self) -> None:
        self.runs.append(self.rows)
        self.rows = []

    def print(self, nodes: int) -> None:
        """The fastest of the runs per stage (the one the machine's other load hit least)."""
        names = [name for name, _, _ in self.runs[0]]
        best = {name: (self.runs[0][i][1] if "import" in name else
                       min(r[i][1] for r in self.runs if i < len(r))) for i, name in enumerate(names)}
        peaks = {name: self.runs[0][i][2] for i, name in enumerate(names)}
        if len(self.runs) > 1:
            print(f"(fastest of {len(self.runs)} runs per stage)")
        total = sum(t for name, t in best.items() if not name.startswith("floor"))
        for name in names:
            t, peak = best[name], peaks[name]
            mem = f"  peak +{peak:7.1f} MiB" if peak is not None else ""
            share = "" if name.startswith("floor") else f"{100 * t / total:5.1f}%"
            print(f"{name:<40} {t:7.3f} s cpu {share:>6} {t / max(nodes, 1) * 1e6:8.1f} us/node{mem}")
        print(f"{'archlint total':<40} {total:7.3f} s")


def profile(path: Path, stages: Stages, repeat: int = 1) -> int:
    for _ in range(repeat):
        nodes, rule_times = one_run(path, stages)
        stages.next_run()
    stages.print(nodes)
    print("\nslowest rules (last run):")
    for t, rule_id in sorted(rule_times, reverse=True)[:6]:
        print(f"  {rule_id:<36} {t:7.3f} s cpu")
    print(f"\n{nodes} IR nodes")
    return 0


def one_run(path: Path, stages: Stages) -> tuple[int, list[tuple[float, str]]]:
    import io

    from archlint.config import load_config

    with stages.stage("floor: import onnx"):
        import onnx
    with stages.stage("floor: onnx.load + infer_shapes"):
        model = onnx.load(str(path), load_external_data=False)
        onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    del model
    with stages.stage("import archlint.frontends.onnx"):
        from archlint.frontends import onnx as onnx_frontend
    opts = load_config(path.parent)
    with stages.stage("capture (load, infer, build)"):
        (capture,) = onnx_frontend.capture_file(path, opts)
    g = capture.graph
    nodes = len(g)

    from archlint.passes.provenance import provenance_pass
    from archlint.passes.receptive_field import receptive_field_pass
    from archlint.passes.sizes import input_size_pass

    with stages.stage("pass: provenance"):
        provenance_pass(g)
    with stages.stage("pass: receptive field"):
        receptive_field_pass(g)
    with stages.stage("pass: sizes"):
        input_size_pass(g, opts.sizes_range)

    from archlint.api import lint_capture
    from archlint.findings import Report
    from archlint.registry import all_rules
    from archlint.reporters import render
    from archlint.rule import RuleContext

    # The rules one by one, through the RuleContext lint_capture builds.
    ctx = RuleContext(graph=g, frontend="onnx", target=str(path), source=None)
    rule_times = []
    for rule in all_rules():
        if "onnx" not in rule.frontends or not rule.default_enabled:
            continue
        ctx.rule = rule
        start = time.process_time()
        list(rule.check(ctx))
        rule_times.append((time.process_time() - start, rule.id))
    stages.rows.append(("rules (all)", sum(t for t, _ in rule_times), None))

    import archlint.passes as passes

    real_run_passes = passes.run_passes
    passes.run_passes = lambda g, sizes_range=None: None  # done above
    try:
        report = lint_capture(capture, str(path), "onnx", opts, None)
    finally:
        passes.run_passes = real_run_passes
    with stages.stage("report: json"):
        render(Report(models=[report]), "json", io.StringIO())
    return nodes, rule_times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--nodes", type=int, help="profile a synthetic residual chain of N nodes")
    parser.add_argument("--cprofile", type=int, metavar="N", help="print the top N by own time")
    parser.add_argument("--memory", action="store_true", help="tracemalloc peak per stage")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every stage N times in the process; report the fastest")
    args = parser.parse_args(argv)
    if (args.file is None) == (args.nodes is None):
        parser.error("give FILE or --nodes N")
    gc.disable()
    with tempfile.TemporaryDirectory(prefix="archlint-profile-") as tmp:
        path = args.file
        if path is None:
            from synthetic_onnx import write_in_subprocess

            path = write_in_subprocess(Path(tmp), [args.nodes])[args.nodes]
        if args.memory:
            import tracemalloc

            tracemalloc.start()
        stages = Stages(args.memory)
        if args.cprofile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(profile, path, stages, args.repeat)
            print()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.cprofile)
            return 0
        return profile(path, stages, args.repeat)


if __name__ == "__main__":
    raise SystemExit(main())
