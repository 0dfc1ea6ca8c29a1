"""``--fix`` and ``--diff``: apply the findings' fixes, re-lint, keep what holds.

One round: collect the fixes the options allow, refuse those outside the project or on calls
that can't be edited safely (each with a reason), edit the files with libcst, re-lint each
target, and roll back any edit whose finding is still there or that breaks the build. Rounds
repeat on the new report until nothing new is fixable (ruff's fixed point). ``--diff`` edits in
memory only and prints the unified diff.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO

from archlint.fixes.codemod import edit_calls
from archlint.fixes.model import Applicability, CallEdit, Fix

if TYPE_CHECKING:
    from archlint.config import Options
    from archlint.findings import Finding, ModelReport, Report

#: Rounds of fix -> re-lint before giving up on a fixed point (ruff stops at 100; a fix here
#: rarely enables another).
MAX_ROUNDS = 4

Key = tuple[str, "str | None", "int | None", str]
Relint = Callable[[str], "list[ModelReport]"]


def finding_key(f: Finding) -> Key:
    return f.rule, f.location.file, f.location.line, f.location.node


@dataclass
class FixRun:
    """What happened, for the report and the summary line."""

    fixed: list[tuple[Finding, Fix]] = field(default_factory=list)
    #: Finding key -> why its fix was not applied (or was rolled back).
    notes: dict[Key, str] = field(default_factory=dict)
    #: Text of each changed file before the run, for the diff.
    originals: dict[str, str] = field(default_factory=dict)
    #: Text after the run (in memory for --diff).
    texts: dict[str, str] = field(default_factory=dict)
    unsafe_available: int = 0
    #: Fixes left for a later round because another fix edits the same call (--diff has one).
    deferred: int = 0

    @property
    def changed_files(self) -> list[str]:
        return [p for p in self.originals if self.texts.get(p, self.originals[p]) != self.originals[p]]


def fix_report(report: Report, opts: Options, *, unsafe: bool, write: bool,
               relint: Relint | None = None) -> tuple[Report, FixRun]:
    """Apply the report's fixes; returns the report as it stands after them, and the run."""
    from archlint.findings import Report

    relint = relint or _relint_with(opts)
    run = FixRun()
    by_target: dict[str, list[ModelReport]] = {}
    for m in report.models:
        by_target.setdefault(m.target, []).append(m)
    originals = dict(by_target)
    attempted: set[Key] = set()  # each finding gets one try, so a rolled-back fix stays back
    for target in list(by_target):
        for _ in range(MAX_ROUNDS if write else 1):
            models = by_target[target]
            plan = _one_fix_per_call(_eligible(models, unsafe, run, attempted), run)
            if not plan:
                break
            attempted.update(finding_key(f) for f, _ in plan)
            new_models = _fix_target(target, models, plan, run, relint if write else None)
            if new_models is None:
                break
            by_target[target] = new_models
    if write and opts.confirm:
        from archlint.runner import confirm_model

        for target, models in by_target.items():
            if models is not originals[target]:
                for m in models:
                    confirm_model(m, opts.device)
    final = Report(models=[m for ms in by_target.values() for m in ms])
    _annotate(final, run, unsafe)
    return final, run


# --- choosing ---------------------------------------------------------------------------------


def _eligible(models: list[ModelReport], unsafe: bool, run: FixRun,
              attempted: set[Key]) -> list[tuple[Finding, Fix]]:
    plan = []
    for m in models:
        for f in m.findings:
            fx = f.autofix
            if fx is None or finding_key(f) in attempted:
                continue
            if fx.applicability is Applicability.DISPLAY_ONLY:
                continue
            if fx.applicability is Applicability.UNSAFE and not unsafe:
                continue
            reason = _outside_project(fx, m.target) or _shared_call(fx, models)
            if reason is not None:
                run.notes[finding_key(f)] = f"not fixed: {reason}"
                attempted.add(finding_key(f))
                continue
            plan.append((f, fx))
    return plan


def _one_fix_per_call(plan: list[tuple[Finding, Fix]], run: FixRun) -> list[tuple[Finding, Fix]]:
    """The first fix on each call; the others wait for the next round, recomputed by a re-lint
    on the edited call (as ruff defers overlapping fixes)."""
    taken: set[tuple[str | None, int | None]] = set()
    kept = []
    for f, fx in plan:
        calls = {(e.location.file, e.location.line) for e in fx.edits}
        if calls & taken:
            run.deferred += 1
            continue
        taken |= calls
        kept.append((f, fx))
    return kept


def project_root(target: str) -> Path:
    """The nearest folder above the target holding pyproject.toml, setup.py or .git."""
    start = Path(target).resolve().parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("pyproject.toml", "setup.py", ".git")):
            return folder
    return start


def _outside_project(fx: Fix, target: str) -> str | None:
    root = project_root(target)
    installed = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))}
    for edit in fx.edits:
        file = edit.location.file
        if not file or not edit.location.line:
            return "the layer has no source line to edit"
        path = Path(file).resolve()
        if path.suffix != ".py":
            return f"{file} is not Python source"
        parts = set(path.parts)
        if ("site-packages" in parts or "dist-packages" in parts
                or any(path.is_relative_to(p) for p in installed)):
            return f"the layer is built in an installed library ({file}), not in this project"
        if not path.is_relative_to(root):
            return f"{file} is outside the project ({root})"
    return None


def _shared_call(fx: Fix, models: list[ModelReport]) -> str | None:
    """A call that builds other layers too (a loop, a helper's line) would change them all."""
    for edit in fx.edits:
        at = (edit.location.file, edit.location.line)
        built: set[tuple[int, str]] = set()
        covered: set[tuple[int, str]] = set()
        for i, m in enumerate(models):
            if m.graph is not None:
                for _, data in m.graph.nodes(data=True):
                    loc = data.get("location")
                    if loc is not None and (loc.file, loc.line) == at and data.get("op") not in (
                            "input", "output"):
                        built.add((i, loc.node))
            for f in m.findings:
                for e in f.autofix.edits if f.autofix is not None else ():
                    if (e.location.file, e.location.line) == at and e.arguments == edit.arguments:
                        covered.add((i, e.location.node))
        others = sorted({name for _, name in built - covered})
        if others:
            return (f"line {edit.location.line} also builds {', '.join(others[:3])}, "
                    "which this edit would change too")
    return None


# --- applying ---------------------------------------------------------------------------------


def _fix_target(target: str, models: list[ModelReport], plan: list[tuple[Finding, Fix]],
                run: FixRun, relint: Relint | None) -> list[ModelReport] | None:
    """Edit, re-lint and roll back for one target; the target's new reports (None: unchanged)."""
    texts: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for _, fx in plan:
        for e in fx.edits:
            path = str(e.location.file)
            if path in texts or path in unusable:
                continue
            try:
                texts[path] = run.texts.get(path) or _read(path)
            except (OSError, UnicodeDecodeError) as exc:
                unusable[path] = f"{path} cannot be read as UTF-8 text ({exc})"
                continue
            if relint is not None and not os.access(path, os.W_OK):
                unusable[path] = f"{path} is not writable"
                del texts[path]
                continue
            run.originals.setdefault(path, texts[path])
    # Which edits libcst can make at all, each refusal with its reason.
    editable = []
    for f, fx in plan:
        reason = next((unusable[str(e.location.file)] for e in fx.edits
                       if str(e.location.file) in unusable), None) or _refusal(fx, texts)
        if reason is None:
            editable.append((f, fx))
        else:
            run.notes[finding_key(f)] = f"not fixed: {reason}"
    if not editable:
        return None
    if relint is None:  # --diff: no writing, no re-lint
        run.texts.update(_edited(texts, editable))
        run.fixed.extend(editable)
        return None

    old_keys = {finding_key(f) for m in models for f in m.findings}
    old_error = next((m.error for m in models if m.error), None)

    def attempt(subset: list[tuple[Finding, Fix]]) -> list[ModelReport]:
        _write_all(_edited(texts, subset), target)
        return relint(target)

    def verdict(subset, new_models) -> tuple[list[tuple[Finding, Fix]], str | None]:
        still = {finding_key(f) for m in new_models for f in m.findings}
        broken = _broken(old_keys, old_error, new_models)
        return [(f, fx) for f, fx in subset if finding_key(f) in still], broken

    try:
        accepted = list(editable)
        new_models = attempt(accepted)
        remaining, broken = verdict(accepted, new_models)
        while remaining and not broken:
            for f, _ in remaining:
                run.notes[finding_key(f)] = "rolled back: the edit did not remove the finding"
            accepted = [p for p in accepted if p not in remaining]
            new_models = attempt(accepted)
            remaining, broken = verdict(accepted, new_models)
        if broken:  # one at a time, to find the edits that break it
            accepted = []
            for pair in editable:
                if finding_key(pair[0]) in run.notes:
                    continue
                trial = attempt([*accepted, pair])
                left, broke = verdict([pair], trial)
                if broke or left:
                    run.notes[finding_key(pair[0])] = (
                        f"rolled back: {broke}" if broke
                        else "rolled back: the edit did not remove the finding")
                else:
                    accepted.append(pair)
            new_models = attempt(accepted)
    except BaseException:  # an interrupt mid-trial: leave the files as this round found them
        _write_all(texts, target)
        raise
    run.texts.update(_edited(texts, accepted))
    run.fixed.extend(accepted)
    return new_models


def _refusal(fx: Fix, texts: dict[str, str]) -> str | None:
    for e in fx.edits:
        result = edit_calls(texts[str(e.location.file)], [e])
        if e in result.refused:
            return result.refused[e]
    return None


def _edited(texts: dict[str, str], subset: list[tuple[Finding, Fix]]) -> dict[str, str]:
    """Each file's text with the subset's edits (all of a file's edits in one libcst pass)."""
    edits: dict[str, list[CallEdit]] = {path: [] for path in texts}
    for _, fx in subset:
        for e in fx.edits:
            edits[str(e.location.file)].append(e)
    return {path: edit_calls(texts[path], edits[path]).text if edits[path] else texts[path]
            for path in texts}


def _broken(old_keys: set[Key], old_error: str | None, new_models: list[ModelReport]) -> str | None:
    """Why the re-linted target is worse than before: it stopped building, or a new error."""
    if old_error is None:
        error = next((m.error for m in new_models if m.error), None)
        if error is not None:
            return f"the model no longer builds ({error})"
    old = {(rule, file, line) for rule, file, line, _ in old_keys}
    for m in new_models:
        for f in m.findings:
            if f.severity.value == "error" and (f.rule, f.location.file, f.location.line) not in old:
                return f"it causes {f.code} at line {f.location.line}: {f.message}"
    return None


def _read(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def _write_all(texts: dict[str, str], target: str) -> None:
    for path, text in texts.items():
        if _read(path) == text:
            continue
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if os.path.abspath(path) != os.path.abspath(target):
            # A sibling module is imported, not exec'd: its .pyc may carry the same mtime.
            cached = importlib.util.cache_from_source(path)
            if os.path.exists(cached):
                os.remove(cached)


def _relint_with(opts: Options) -> Relint:
    from archlint.runner import lint_target

    quiet = replace(opts, confirm=False)
    return lambda target: lint_target(target, quiet)


# --- reporting --------------------------------------------------------------------------------


def _annotate(report: Report, run: FixRun, unsafe: bool) -> None:
    for f in report.findings:
        note = run.notes.get(finding_key(f))
        if note is not None:
            f.fix_note = note
        elif f.autofix is not None and f.autofix.applicability is Applicability.UNSAFE and not unsafe:
            run.unsafe_available += 1


def unified_diff(run: FixRun) -> str:
    """A patch ``git apply`` takes, paths relative to the current folder."""
    chunks = []
    for path in run.changed_files:
        shown = _relative(path)
        before = run.originals[path].splitlines(keepends=True)
        after = run.texts[path].splitlines(keepends=True)
        lines = list(difflib.unified_diff(before, after, f"a/{shown}", f"b/{shown}"))
        for line in lines:
            chunks.append(line)
            if not line.endswith("\n"):
                chunks.append("\n\\ No newline at end of file\n")
    return "".join(chunks)


def _relative(path: str) -> str:
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def summary_lines(run: FixRun, *, write: bool) -> list[str]:
    verb = "fixed" if write else "would fix"
    lines = [f"{verb} {_where(f)} [{f.rule}] {fx.described}{_elsewhere(f, fx)}"
             for f, fx in run.fixed]
    if not write:  # --fix puts these on the findings in the report
        lines += [f"{file}:{line} [{rule}] {note}" for (rule, file, line, _), note in run.notes.items()]
    count = len(run.fixed)
    files = len(run.changed_files)
    head = ("Fixed" if write else "Would fix") + f" {count} finding{'s' if count != 1 else ''}"
    if count:
        head += f" in {files} file{'s' if files != 1 else ''}"
    rolled = sum(1 for n in run.notes.values() if n.startswith("rolled back"))
    refused = sum(1 for n in run.notes.values() if n.startswith("not fixed"))
    extra = []
    if rolled:
        extra.append(f"{rolled} rolled back")
    if refused:
        extra.append(f"{refused} not fixable here")
    if run.deferred and not write:
        extra.append(f"{run.deferred} more on calls edited here: run --fix, then --diff again")
    if run.unsafe_available:
        extra.append(f"{run.unsafe_available} more with --unsafe-fixes")
    lines.append(head + (f" ({', '.join(extra)})" if extra else "") + ".")
    return lines


def _elsewhere(f: Finding, fx: Fix) -> str:
    """Where the edit went, when that is another line (a merge fixed at the layer that diverged)."""
    places = [e.location for e in fx.edits if (e.location.file, e.location.line)
              != (f.location.file, f.location.line)]
    if not places:
        return ""
    return " at " + ", ".join(f"{p.node} (line {p.line})" for p in places)


def _where(f: Finding) -> str:
    return f"{f.location.file}:{f.location.line}"


def run_fix_options(report: Report, opts: Options, *, fix: bool, diff: bool, unsafe: bool,
                    text_output: bool, stdout: TextIO | None = None,
                    stderr: TextIO | None = None,
                    relint: Relint | None = None) -> tuple[Report, int | None]:
    """The CLI's one call: returns the report to render, or an exit code when --diff printed.
    ``relint`` lints a fixed target again (the CLI's: with that target's own project config)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    report, run = fix_report(report, opts, unsafe=unsafe, write=not diff, relint=relint)
    if diff:
        stdout.write(unified_diff(run))
        stdout.flush()
        for line in summary_lines(run, write=False):
            print(line, file=stderr)
        return report, 1 if run.changed_files else 0
    stream = stdout if text_output else stderr
    for line in summary_lines(run, write=True):
        print(line, file=stream)
    if text_output:
        print(file=stream)
    return report, None
