"""The ``archlint`` command.

    archlint PATH... [options]      lint models (.py files, .onnx files, folders, globs)
    archlint rules                  list the rules
    archlint rule ID                print a rule's docs
    archlint sizes PATH...          print the input sizes each model accepts

Exit codes: 0 clean, 1 findings at or above --fail-on, 2 a usage or config error or a target
that could not be analyzed. User mistakes give one line on stderr, never a traceback.
Imports stay lazy: ``--help``, ``rules`` and ONNX targets never import torch.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from archlint.config import ConfigError, Options, find_config, load_config, parse_model_spec, parse_shape
from archlint.runner import iter_lint_files, lint_target, unusable_report

if TYPE_CHECKING:
    from archlint.findings import ModelReport, Report

SUBCOMMANDS = ("rules", "rule", "sizes")


class UsageError(Exception):
    """A bad command line: one line on stderr, exit 2."""


# --- entry point -----------------------------------------------------------------------------


def entry() -> NoReturn:
    """The console script: ``main()`` without cyclic GC, then exit without tearing the heap down.

    On a 30k-node ONNX graph, GC passes over the graph's heap and freeing it object by object
    at exit cost ~1 s of a ~4 s run, and serve no one in a short-lived process (mypy exits the
    same way). Output is flushed first; nothing archlint starts needs an atexit hook.
    """
    gc.disable()  # a short run; lint_files collects between targets to keep memory bounded
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # A folder named like a subcommand is linted as ./rules; a plain word is the subcommand.
        if argv and argv[0] in SUBCOMMANDS and not os.path.isfile(argv[0]):
            command = {"rules": run_rules, "rule": run_rule, "sizes": run_sizes}[argv[0]]
            return command(argv[1:])
        return run_lint(argv)
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc))
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `archlint ... | head`: stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # an archlint bug: one line and exit 2, as ruff does
        from archlint.registry import RuleLoadError

        if isinstance(exc, RuleLoadError):
            return _fail(str(exc))
        return _fail(f"internal error: {type(exc).__name__}: {exc}")


def _fail(message: str) -> int:
    print(f"archlint: error: {message}", file=sys.stderr)
    return 2


# --- argument parsing ------------------------------------------------------------------------


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser(prog: str = "archlint") -> argparse.ArgumentParser:
    from archlint import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Lint neural-network architectures: shapes, receptive fields and "
        "architecture bugs, without running the model.",
        epilog="Subcommands: 'archlint rules' lists the rules, 'archlint rule ID' prints one "
        "rule's docs, 'archlint sizes PATH...' prints the input sizes each model accepts. "
        "To lint a folder named like a subcommand, write ./rules.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help=".py model files, .onnx files, folders or globs (default: .)")
    parser.add_argument("--version", action="version", version=f"archlint {__version__}")
    parser.add_argument("--model", metavar="NAME",
                        help="the model to lint in a .py file: an instance, a class or a factory, "
                        "with literal constructor arguments if it needs them: 'Net(3, width=64)'")
    parser.add_argument("--input-shape", action="append", metavar="SHAPE", dest="input_shape",
                        help="example input shape like 1,3,224,224 (repeat for several inputs)")
    parser.add_argument("--format", "--output-format", dest="format", default="text",
                        choices=("text", "full", "concise", "json", "sarif", "github", "html"),
                        help="text (full, the default), concise (one line per finding), json, "
                        "sarif, github, or html (a self-contained page; see -o)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the report to FILE instead of stdout")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="color the text report (auto: on a terminal; NO_COLOR and "
                        "FORCE_COLOR are honoured)")
    parser.add_argument("--select", action="append", type=_csv, metavar="RULES",
                        help="rule ids, codes or code prefixes to run (replaces the default set)")
    parser.add_argument("--extend-select", action="append", type=_csv, metavar="RULES",
                        help="rules to run in addition to the selected ones")
    parser.add_argument("--ignore", action="append", type=_csv, metavar="RULES",
                        help="rules to skip")
    parser.add_argument("--fail-on", choices=("error", "warning", "info"),
                        help="lowest severity that makes the exit code 1 (default: warning)")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit 0 even with findings (2 still means a target failed)")
    parser.add_argument("--show", choices=("layers",),
                        help="'layers': the model summary, every op's shape, receptive field, "
                        "parameters and MACs")
    parser.add_argument("--depth", type=int, metavar="N",
                        help="with --show layers: fold modules deeper than N into one row")
    parser.add_argument("--statistics", action="store_true", help="count findings per rule")
    parser.add_argument("--sizes-range", metavar="LO,HI", help="input sizes the sweep covers")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time allowed to import and analyze one target")
    parser.add_argument("--confirm", action="store_true",
                        help="run the model on a device to confirm the predictions")
    parser.add_argument("--device", help="device for --confirm (default: cpu)")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="lint N targets in parallel processes (0: one per CPU)")
    parser.add_argument("--config", metavar="PATH", help="a pyproject.toml to read [tool.archlint] from")
    parser.add_argument("--show-settings", action="store_true",
                        help="print the config, import name and import roots each target uses; "
                        "lint nothing")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--skip-non-models", action="store_true",
                        help="silently skip .py files that define no nn.Module (for pre-commit)")
    parser.add_argument("--fix", action="store_true",
                        help="apply the safe fixes to the layers' construction calls, then re-lint")
    parser.add_argument("--diff", action="store_true",
                        help="print the fixes as a unified diff instead of writing them")
    parser.add_argument("--unsafe-fixes", action="store_true",
                        help="with --fix/--diff, also apply fixes that change shapes or weights")
    return parser


def _flatten(groups: list[list[str]] | None) -> tuple[str, ...] | None:
    return None if groups is None else tuple(v for group in groups for v in group)


def options_from_args(args: argparse.Namespace, config: Options | None = None) -> Options:
    """``config`` ([tool.archlint] of one target; default: --config, else the nearest to the
    working directory), then the CLI on top."""
    if config is None and args.config is not None:
        config_path = Path(args.config)
        if not config_path.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        config = load_config(path=config_path)
    elif config is None:
        config = load_config(Path.cwd())
    if args.model is not None:
        parse_model_spec(args.model)  # a bad spec is a usage error before anything is imported

    select = _flatten(args.select)
    extend = _flatten(args.extend_select) or ()
    ignore = _flatten(args.ignore) or ()
    if select is not None:
        # ruff's layering: a CLI select starts the selection anew, config ignores included.
        selection = {"select": select, "extend_select": extend, "ignore": ignore}
    else:
        selection = {
            "extend_select": (*config.extend_select, *extend),
            "ignore": (*config.ignore, *ignore),
        }
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds")
    return config.merged(
        model=args.model,
        input_shapes=tuple(parse_shape(s) for s in args.input_shape) if args.input_shape else None,
        fail_on=args.fail_on,
        sizes_range=_parse_sizes_range(args.sizes_range) if args.sizes_range else None,
        timeout=args.timeout,
        confirm=True if args.confirm else None,
        device=args.device,
        **selection,
    )


def _parse_sizes_range(text: str) -> tuple[int, int]:
    parts = _csv(text)
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--sizes-range {text!r}: expected LO,HI like 8,1024") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"--sizes-range {text!r}: need 1 <= LO <= HI")
    return lo, hi


def check_selection(opts: Options) -> None:
    """Fail before linting anything when a selector names no rule."""
    from archlint.registry import all_rules, select_rules

    ignores = {*opts.ignore, *(i for ids in opts.per_file_ignores.values() for i in ids)}
    if not (opts.select or opts.extend_select or ignores):
        return  # nothing to check: loading every rule here would cost a plain .py its speed
    try:
        select_rules(all_rules(), list(opts.select) if opts.select else None,
                     sorted(ignores), list(opts.extend_select))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# --- archlint PATH... ------------------------------------------------------------------------


def run_lint(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _CONFIGS.clear()  # a fresh run (main() may be called again in one process) reads them anew
    if args.format == "full":
        args.format = "text"
    if args.depth is not None and args.depth < 0:
        raise UsageError("--depth must be 0 or more")
    opts = options_from_args(args)
    if args.skip_non_models and _nothing_to_lint(args.paths):
        return 0  # pre-commit handed only plain scripts: done before loading any rule
    check_selection(opts)
    if opts.confirm and opts.device != "cpu":
        from archlint.confirm import check_device

        check_device(opts.device)  # a missing GPU is a usage error, said once
    if args.show_settings:
        from archlint.show_settings import show_settings

        return show_settings(args.paths or ["."], args, target_options)
    from archlint.reporters.stream import ReportWriter

    fixing = args.fix or args.diff

    with ReportWriter(args) as writer:
        if fixing:
            writer.streaming = False  # what remains is known only after the fixes and re-lint
        try:
            report = lint_paths(args.paths or ["."], opts, args, on_result=writer.add)
        except Interrupted as exc:
            writer.finish(exc.report, interrupted=True)
            return 130
        if fixing:
            from archlint.fixes.engine import run_fix_options

            def relint(target: str) -> list[ModelReport]:
                # each fixed file is linted again under its own project's [tool.archlint]
                return lint_target(target, replace(target_options(target, args, opts), confirm=False))

            report, diff_code = run_fix_options(report, opts, fix=args.fix, diff=args.diff,
                                                unsafe=args.unsafe_fixes,
                                                text_output=args.format in ("text", "concise"),
                                                relint=relint)
            if diff_code is not None:
                return diff_code
        writer.finish(report)
    code = _exit_code(report, args)
    return 0 if args.exit_zero and code == 1 else code


def _exit_code(report: Report, args: argparse.Namespace) -> int:
    """As ``report.exit_code``, each target judged by its own config's fail-on (or --fail-on)."""
    from archlint.findings import Report as _Report

    if report.failed_targets:
        return 2
    codes = [_Report(models=[m]).exit_code(target_options(m.target, args).fail_on)
             for m in report.models]
    return max(codes, default=0)


class Interrupted(Exception):
    """Ctrl-C during a run: carries the report of the targets that finished."""

    def __init__(self, report: Report) -> None:
        super().__init__("interrupted")
        self.report = report


def _nothing_to_lint(paths: list[str]) -> bool:
    from archlint.targets import expand_targets

    expansion = expand_targets(paths, skip_non_models=True)
    return bool(paths) and not expansion.files and not expansion.problems


def lint_paths(paths: list[str], opts: Options, args: argparse.Namespace,
               on_result: Callable[[list[ModelReport]], None] | None = None) -> Report:
    """Lint every target; ``on_result`` sees each target's models as soon as they are done
    (in order). Ctrl-C raises :class:`Interrupted` with the targets that finished."""
    from archlint.findings import Report
    from archlint.targets import building_block_files, expand_targets

    expansion = expand_targets(paths, skip_non_models=args.skip_non_models)
    files = [str(f) for f in expansion.files]
    jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    show_progress = not args.no_progress and len(files) > 1 and sys.stderr.isatty()
    per_file = [target_options(f, args, opts) for f in files]
    configured = {f: bool(o.model or o.models_for(f)) for f, o in zip(expansion.files, per_file)}
    blocks = building_block_files(expansion.files, expansion.named,
                                  pre_commit=args.skip_non_models, named_models=configured.get)
    kept = [i for i, f in enumerate(expansion.files) if f not in blocks]
    files, per_file = [files[i] for i in kept], [per_file[i] for i in kept]
    for checked in {o.config_file: o for o in per_file}.values():
        check_selection(checked)
    report = Report()
    try:
        for models in iter_lint_files(files, opts, jobs=jobs, show_progress=show_progress,
                                      per_file=per_file):
            report.models.extend(models)
            if on_result is not None:
                on_result(models)
    except KeyboardInterrupt:
        raise Interrupted(report) from None
    problems = [unusable_report(p.path, p.reason) for p in expansion.problems]
    report.models.extend(problems)
    if on_result is not None and problems:
        on_result(problems)
    return report


_CONFIGS: dict[str, Options] = {}


def target_options(path: str, args: argparse.Namespace, default: Options | None = None) -> Options:
    """The options for one target: the nearest [tool.archlint] above it (as ruff: per file),
    else ``default`` (the working directory's); --config beats both; the CLI goes on top."""
    config_path = find_config(Path(path)) if args.config is None else None
    if config_path is None:
        if default is None:
            if "" not in _CONFIGS:
                _CONFIGS[""] = options_from_args(args)
            default = _CONFIGS[""]
        return default
    key = str(config_path)
    if key not in _CONFIGS:
        _CONFIGS[key] = options_from_args(args, load_config(path=config_path))
    return _CONFIGS[key]


# --- archlint rules / rule / sizes -----------------------------------------------------------


def run_rules(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="archlint rules", description="List the rules.")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    from archlint.registry import all_rules

    rules = all_rules()
    if args.format == "json":
        import json

        json.dump([
            {"id": r.id, "code": r.code, "severity": r.severity.value,
             "default_enabled": r.default_enabled, "summary": r.summary,
             "frontends": sorted(r.frontends)}
            for r in rules
        ], sys.stdout, indent=2)
        print()
        return 0

    from rich.table import Table

    from archlint.reporters.text import make_console, print_table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("code", "id", "severity", "default", "summary"):
        table.add_column(column, no_wrap=column != "summary")
    for r in rules:
        table.add_row(r.code, r.id, r.severity.value, "on" if r.default_enabled else "off", r.summary)
    print_table(make_console(sys.stdout), table)
    return 0


def run_rule(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="archlint rule", description="Print a rule's docs.")
    parser.add_argument("rule", metavar="ID", help="a rule id (kebab-case) or code (AL101)")
    args = parser.parse_args(argv)
    from archlint.registry import rule_by_id

    rule = rule_by_id(args.rule)
    if rule is None:
        from archlint.registry import all_rules
        from archlint.suggest import did_you_mean

        hint = did_you_mean(args.rule, [n for r in all_rules() for n in (r.id, r.code)])
        raise UsageError(f"unknown rule {args.rule!r}{hint} (see 'archlint rules')")
    header = (f"# {rule.id} ({rule.code})\n\n"
              f"Severity: {rule.severity}. Enabled by default: {'yes' if rule.default_enabled else 'no'}. "
              f"Frontends: {', '.join(sorted(rule.frontends))}.\n\n{rule.summary}.\n\n")
    text = header + (rule.docs or "(this rule has no docs)") + "\n"
    if sys.stdout.isatty():
        from rich.markdown import Markdown

        from archlint.reporters.text import make_console

        make_console(sys.stdout).print(Markdown(text))
    else:
        sys.stdout.write(text)
    return 0


def sizes_parser() -> argparse.ArgumentParser:
    """``archlint sizes``: only the options that change which sizes are found."""
    parser = argparse.ArgumentParser(
        prog="archlint sizes",
        description="Print the input sizes each model accepts (no rules are run).")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help=".py model files, .onnx files, folders or globs (default: .)")
    parser.add_argument("--model", metavar="NAME",
                        help="the model in a .py file: an instance, a class or a factory, with literal "
                        "constructor arguments if it needs them: 'Net(3, width=64)'")
    parser.add_argument("--input-shape", action="append", metavar="SHAPE", dest="input_shape",
                        help="example input shape like 1,3,224,224 (repeat for several inputs)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--sizes-range", metavar="LO,HI", help="input sizes the sweep covers")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time allowed to import and analyze one target")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="analyze N targets in parallel processes (0: one per CPU)")
    parser.add_argument("--config", metavar="PATH", help="a pyproject.toml to read [tool.archlint] from")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(select=None, extend_select=None, ignore=None, fail_on=None, confirm=False,
                        device=None, skip_non_models=False)
    return parser


def run_sizes(argv: list[str]) -> int:
    if any(a in ("--fix", "--diff", "--unsafe-fixes") for a in argv):
        raise UsageError("--fix and --diff apply to 'archlint PATH', not to 'archlint sizes'")
    args = sizes_parser().parse_args(argv)
    _CONFIGS.clear()
    opts = options_from_args(args)
    check_selection(opts)
    report = lint_paths(args.paths or ["."], opts, args)
    if args.format == "json":
        import json

        from archlint.reporters.json import jsonable

        json.dump({"version": 1, "models": [
            {"target": m.target, "model": m.model, "admissible_sizes": jsonable(m.admissible_sizes),
             "sizes_summary": m.sizes_summary, "error": m.error}
            for m in report.models
        ]}, sys.stdout, indent=2)
        print()
    else:
        from archlint.reporters.text import model_title

        for m in report.models:
            if m.error is not None:
                print(f"{model_title(m)}: error: {m.error}")
            else:
                print(f"{model_title(m)}: {m.sizes_summary or 'admissible sizes unknown'}")
    return 2 if report.failed_targets else 0
