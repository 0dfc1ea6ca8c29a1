"""Running the lint over files: one target under its time limit (a problem with the file costs
that target, never the run), many in order or in worker processes (results streamed in order,
a dead worker isolated), with a progress bar, ``--confirm`` per model, and the portable copy of
a report that a worker sends back. The command line (:mod:`archlint.cli`) decides what to run.
"""

from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from archlint.config import ConfigError, Options
from archlint.deadline import TimedOut, deadline

if TYPE_CHECKING:
    import networkx as nx

    from archlint.findings import ModelReport


def unusable_report(path: str, reason: str) -> ModelReport:
    from archlint.findings import ModelReport

    suffix = Path(path).suffix.lower()
    frontend = {".onnx": "onnx", ".py": "torch"}.get(suffix)
    return ModelReport(target=path, frontend=frontend, model=None, error=reason)  # type: ignore[arg-type]


def lint_files(files: list[str], opts: Options, *, jobs: int = 1,
               show_progress: bool = False,
               per_file: list[Options] | None = None) -> list[list[ModelReport]]:
    """Lint each file (with ``per_file[i]`` when given, else ``opts``); one result list per
    file, in order. A failure stays with its file."""
    return list(iter_lint_files(files, opts, jobs=jobs, show_progress=show_progress,
                                per_file=per_file))


def iter_lint_files(files: list[str], opts: Options, *, jobs: int = 1,
                    show_progress: bool = False,
                    per_file: list[Options] | None = None) -> Iterator[list[ModelReport]]:
    """Like :func:`lint_files`, yielding each file's results as soon as it (and every file
    before it) is done."""
    per_file = per_file if per_file is not None else [opts] * len(files)
    with _progress(len(files), show_progress) as advance:
        if jobs <= 1 or len(files) <= 1:
            for i, f in enumerate(files):
                if i:
                    gc.collect()  # the previous target's graph (the console entry turns GC off)
                advance(f, 0)
                yield lint_target(f, per_file[i])
                advance(None, 1)
            return
        yield from _lint_in_processes(files, per_file, jobs, advance)


def _lint_in_processes(files: list[str], per_file: list[Options], jobs: int,
                       advance: Callable[[str | None, int], None]) -> Iterator[list[ModelReport]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results: dict[int, list[ModelReport]] = {}
    next_out = 0
    pending = list(range(len(files)))
    isolated = False  # after a worker died, run the rest one per pool so it can't take others
    while pending:
        broken: list[int] = []
        groups = [[i] for i in pending] if isolated else [pending]
        for group in groups:
            with ProcessPoolExecutor(max_workers=min(jobs, len(group)),
                                     mp_context=_mp_context()) as pool:
                futures = {pool.submit(lint_target, files[i], per_file[i], True): i
                           for i in group}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BrokenProcessPool:
                        if isolated:
                            results[i] = [unusable_report(files[i], "the worker process died "
                                                  "(a crash or out of memory) while linting it")]
                        else:
                            broken.append(i)
                            continue
                    advance(files[i], 1)
                    while next_out in results:  # in order: stream the finished prefix
                        yield results[next_out]
                        next_out += 1
        pending, isolated = sorted(broken), True
    while next_out < len(files):
        yield results[next_out]
        next_out += 1


def _mp_context():
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[str | None, int], None]]:
    """``advance(file, steps)``: show ``file`` as the current one and move the bar."""
    if not enabled:
        yield lambda file, steps: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from archlint.reporters import display_path

    with Progress(TextColumn("linting"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[file]}"),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("lint", total=total, file="")

        def advance(file: str | None, steps: int) -> None:
            fields = {"file": display_path(file) or file} if file else {}
            progress.update(task, advance=steps, **fields)

        yield advance


def lint_target(path: str, opts: Options, portable: bool = False) -> list[ModelReport]:
    """Lint one file under the time limit; never raises for a problem with that file.

    ``portable`` (in a worker process): replace each graph by a copy holding only what the
    reporters read, so the result pickles whatever facts the passes wrote.
    """
    from archlint.api import lint

    _import_frontend_for(path)
    try:
        with deadline(opts.timeout):
            models = lint(path, config=opts).models
    except TimedOut as exc:
        return [unusable_report(path, str(exc))]
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        return [unusable_report(path, f"the file called sys.exit({exc.code!r}) while being imported")]
    except ConfigError as exc:
        return [unusable_report(path, str(exc))]
    except Exception as exc:  # a bug must cost one target, not the run
        return [unusable_report(path, f"internal error: {type(exc).__name__}: {exc}")]
    if opts.confirm:
        for m in models:
            confirm_model(m, opts.device)
    if portable:
        models = [portable_report(m) for m in models]
    return models


def _import_frontend_for(path: str) -> None:
    """Import the torch frontend before a model file's time limit starts: the limit is for the
    target's own import and capture, and an alarm inside ``import torch`` would leave torch half
    initialized for every later target. Files with no model never import it. The same holds
    for the onnx package and an ``.onnx`` target (its import alone can take seconds)."""
    if path.lower().endswith(".onnx") and "archlint.frontends.onnx" not in sys.modules:
        try:
            import archlint.frontends.onnx  # noqa: F401
        except ImportError:
            pass  # lint() reports it
        return
    if not path.endswith(".py") or "archlint.frontends.torch" in sys.modules:
        return
    from archlint.frontends.source import defines_models

    try:
        if defines_models(Path(path).read_text(encoding="utf-8"), named=True):
            import archlint.frontends.torch  # noqa: F401
    except (OSError, UnicodeDecodeError, ImportError, SyntaxError):
        pass  # lint() reports it, under the time limit, with its one-line reason


def confirm_model(m: ModelReport, device: str) -> None:
    """Run --confirm on one model; a failure there is noted, it never hides the static report."""
    from archlint.confirm import confirm_report

    try:
        confirm_report(m, device)
    except KeyboardInterrupt:
        raise
    except ConfigError as exc:
        m.confirm = {"device": device, "error": str(exc)}
        m.notes.append(f"not confirmed: {exc}")
    except Exception as exc:
        m.confirm = {"device": device, "error": f"{type(exc).__name__}: {exc}"}
        m.notes.append(f"confirm failed: {type(exc).__name__}: {exc}")


_PORTABLE_NODE_KEYS = ("op", "origin", "inputs", "attrs", "shapes", "location", "error", "rf",
                       "rf_global", "cost", "scope")
_PORTABLE_GRAPH_KEYS = ("name", "target", "frontend", "input_shapes", "input_assumed", "capture_note",
                        "cost_totals")


def portable_report(m: ModelReport) -> ModelReport:
    from archlint.reporters.json import jsonable

    return replace(
        m,
        graph=portable_graph(m.graph),
        admissible_sizes=jsonable(m.admissible_sizes),
        confirm=jsonable(m.confirm),
    )


def portable_graph(g: "nx.DiGraph | None") -> "nx.DiGraph | None":
    if g is None:
        return None
    import networkx as nx

    from archlint.passes.costs import cost_pass

    cost_pass(g)  # parameters are read from the module, which stays in the worker
    out = nx.DiGraph()
    out.graph.update({k: g.graph[k] for k in _PORTABLE_GRAPH_KEYS if k in g.graph})
    for name, data in g.nodes(data=True):
        out.add_node(name, **{k: data[k] for k in _PORTABLE_NODE_KEYS if k in data})
    for src, dst, data in g.edges(data=True):
        out.add_edge(src, dst, slots=list(data.get("slots", [])))
    return out
