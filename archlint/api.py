"""The Python API: ``lint(target) -> Report``. The CLI and the pytest plugin both call this.

Pipeline per model: frontend (graph) -> passes (facts) -> rules (findings) -> selection and
suppression. Nothing here imports torch: the torch frontend is imported only for a ``.py`` target
or an ``nn.Module``.
"""

from __future__ import annotations

import contextlib
import gc
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from archlint.config import ConfigError, Options, load_config
from archlint.findings import Finding, ModelReport, Report
from archlint.frontends import Capture, TargetError
from archlint.frontends.source import defines_models
from archlint.registry import all_rules, select_rules
from archlint.rule import RuleContext, SourceFile

__all__ = ["lint", "lint_capture", "Report", "Options"]

_SUPPRESSION = re.compile(r"#\s*archlint:\s*ignore(?:\[([^\]]*)\])?")


def lint(
    target: Any,
    example_inputs: Any = None,
    config: Options | None = None,
    *,
    example_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Report:
    """Lint one target and return its :class:`Report`.

    ``target`` is a path to a ``.py`` model file or a ``.onnx`` file, an ``nn.Module``, or an
    ``onnx.ModelProto``. ``example_inputs`` is a tensor, a tuple of tensors, or a shape tuple
    (or a list of shape tuples) for several inputs, and may hold dicts and lists of them;
    ``example_kwargs`` gives forward's keyword inputs the same way. ``config`` defaults to ``[tool.archlint]``
    of the nearest pyproject.toml; keyword ``options`` (``select``, ``ignore``, ``model``,
    ``input_shapes``, ``fail_on``, ...) override it.

    Raises :class:`archlint.config.ConfigError` for a bad option. A target that cannot be
    analyzed does not raise: its ModelReport carries ``error``.
    """
    if config is None:
        start = Path(target).parent if isinstance(target, (str, Path)) else Path.cwd()
        config = load_config(start)
    opts = config.merged(**options)
    report = Report()
    with gc_paused():
        report.models.extend(_lint_one(target, example_inputs, opts, example_kwargs))
    return report


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while one target is linted: capture and passes allocate per node and free
    almost nothing, so the collector's passes over a large graph's heap cost ~20% of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lint_one(target: Any, example_inputs: Any, opts: Options,
              example_kwargs: Any = None) -> list[ModelReport]:
    if isinstance(target, (str, Path)):
        path = Path(target)
        frontend = "onnx" if path.suffix.lower() == ".onnx" else "torch"
        try:
            if not path.exists():
                raise TargetError(f"no such file: {path}")
            if path.is_dir():
                raise TargetError(f"{path} is a directory (the CLI expands directories)")
            if frontend == "onnx":
                from archlint.frontends import onnx as onnx_frontend

                captures = onnx_frontend.capture_file(path, opts)
                source = None
            else:
                source = _read_source(path)
                if opts.model is None and not opts.models_for(path) \
                        and not defines_models(source.text, named=True):
                    # The AST pre-filter: no torch, and no rules, for a file with no model.
                    return [ModelReport(target=str(path), frontend=frontend, model=path.stem,
                                        error=f"no model found in {path}: define an nn.Module "
                                        "subclass or a module-level nn.Module instance, or pass "
                                        "--model")]
                captures = _capture_torch_file(path, opts, example_inputs, example_kwargs)
        except TargetError as exc:
            source = _read_source_quietly(path) if frontend == "torch" else None
            failed = Capture(name=path.stem, graph=None, error=str(exc))
            return [lint_capture(failed, str(path), frontend, opts, source)]
        return [lint_capture(c, str(path), frontend, opts, source) for c in captures]

    if type(target).__name__ == "ModelProto":
        from archlint.frontends import onnx as onnx_frontend

        capture = onnx_frontend.capture_model(target, opts)
        return [lint_capture(capture, capture.name, "onnx", opts, None)]

    # Anything else must be an nn.Module; the torch frontend says so if it is not.
    from archlint.frontends import torch as torch_frontend

    try:
        capture = torch_frontend.capture_module(target, example_inputs, opts,
                                                example_kwargs=example_kwargs)
    except TargetError as exc:
        capture = Capture(name=type(target).__name__, graph=None, error=str(exc))
    return [lint_capture(capture, capture.name, "torch", opts, None)]


def _capture_torch_file(path: Path, opts: Options, example_inputs: Any,
                        example_kwargs: Any = None) -> list[Capture]:
    try:
        from archlint.frontends import torch as torch_frontend
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch":
            raise TargetError(
                "linting a .py model needs PyTorch: pip install 'archlint[torch]'"
            ) from None
        raise
    return torch_frontend.capture_file(path, opts, example_inputs=example_inputs,
                                       example_kwargs=example_kwargs)


def _read_source(path: Path) -> SourceFile:
    try:
        return SourceFile(path, path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"cannot read {path}: {exc}") from None


def _read_source_quietly(path: Path) -> SourceFile | None:
    try:
        return _read_source(path)
    except TargetError:
        return None


def lint_capture(
    capture: Capture,
    target: str,
    frontend: str,
    opts: Options,
    source: SourceFile | None,
) -> ModelReport:
    """Run passes and rules on one captured model and build its ModelReport."""
    g = capture.graph
    report = ModelReport(
        target=target,
        frontend=frontend,
        model=capture.name,
        graph=g,
        error=capture.error,
        notes=list(capture.notes),
    )
    if g is not None:
        from archlint.passes import run_passes

        report.input_shapes = [tuple(s) for s in g.graph.get("input_shapes", [])]
        report.input_assumed = bool(g.graph.get("input_assumed"))
        run_passes(g, sizes_range=opts.sizes_range)
        if g.graph.get("passes_error"):
            report.notes.append(f"internal error, some facts are unknown: {g.graph['passes_error']}")
        report.admissible_sizes = g.graph.get("admissible_sizes")
        report.sizes_summary = g.graph.get("sizes_summary")

    try:
        rules = select_rules(all_rules(), list(opts.select) if opts.select else None,
                             list(opts.ignored_for(target)), list(opts.extend_select))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    ctx = RuleContext(graph=g, frontend=frontend, target=target, source=source)
    findings: list[Finding] = []
    for rule in rules:
        if frontend not in rule.frontends or (g is None and not rule.reads_source):
            continue
        ctx.rule = rule
        try:
            findings.extend(rule.check(ctx))
        except Exception as exc:  # a rule bug must not hide the other findings
            report.notes.append(f"internal error in rule {rule.id}: {type(exc).__name__}: {exc}")
            if report.error is None:
                report.error = f"internal error in rule {rule.id} (see notes)"
    report.findings = sorted(
        _unsuppressed(findings, source),
        key=lambda f: (f.location.file or "", f.location.line or 0, -f.severity.rank, f.rule),
    )
    return report


def _unsuppressed(findings: Iterable[Finding], source: SourceFile | None) -> list[Finding]:
    """Drop findings whose line carries ``# archlint: ignore[<id or code>]`` (or a bare ignore)."""
    cache: dict[str, list[str]] = {}
    if source is not None:
        cache[str(source.path.resolve())] = source.lines
    kept = []
    for f in findings:
        line = _source_line(f.location.file, f.location.line, cache)
        m = _SUPPRESSION.search(line) if line else None
        if m:
            ids = {s.strip() for s in (m.group(1) or "").split(",") if s.strip()}
            if not ids or f.rule in ids or f.code in ids:
                continue
        kept.append(f)
    return kept


def _source_line(file: str | None, line: int | None, cache: dict[str, list[str]]) -> str | None:
    if not file or not line:
        return None
    key = str(Path(file).resolve())
    if key not in cache:
        try:
            cache[key] = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            cache[key] = []
    lines = cache[key]
    return lines[line - 1] if 0 < line <= len(lines) else None
