"""The human report (rich): findings grouped by target and model, quiet on clean models.

    models/unet.py (UNet)
      models/unet.py:42: AL101 error skip connection adds 57x57 to 56x56
          fix: use padding=1 in self.up
      sizes: H, W >= 32 and divisible by 16

    Found 1 error in 1 model

A model with nothing to report prints nothing (its sizes are one 'archlint sizes' away).
Colors only on a terminal (rich turns them off on a pipe).
"""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from archlint.findings import Finding, ModelReport, Report
from archlint.reporters import display_path, global_text, rule_statistics, summary

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def make_console(stream: TextIO, color: str | None = None) -> Console:
    """A console for ``stream``: ``color`` is ``auto`` (default: on a terminal, and rich reads
    NO_COLOR and FORCE_COLOR), ``always`` or ``never``."""
    # highlight=False: rich must not recolor numbers and paths on its own. On a pipe nothing
    # wraps at 80 columns: a tool reading the lines wants them whole.
    terminal = _is_terminal(stream)
    width = None if terminal else 400
    options: dict[str, Any] = {}
    if color == "always":
        options["force_terminal"] = True
    elif color == "never":
        options["no_color"] = True
        options["color_system"] = None
    console = Console(file=stream, highlight=False, soft_wrap=True, width=width, **options)
    if color == "always" and not terminal:
        console.width = 400  # colored, but still unwrapped for a pipe
    return console


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_table(console: Console, table: Table) -> None:
    """Print a table without the trailing blanks rich pads its last column with."""
    with console.capture() as capture:
        console.print(table, soft_wrap=False)
    text = "\n".join(line.rstrip() for line in capture.get().splitlines())
    console.out(text, highlight=False)


def print_hanging(console: Console, line: str, hang: int) -> None:
    """Print one markup line wrapped at the console width, continuation lines indented by
    ``hang`` (a finding's message lines up under its start, ruff-style). Never wraps on a pipe."""
    text = Text.from_markup(line)
    width = console.width
    if width >= 400 or len(text) <= width or width < hang + 20:
        console.print(text)
        return
    first = text.wrap(console, width, overflow="fold")[0]
    rest = text[len(first.plain):]
    rest = rest[len(rest.plain) - len(rest.plain.lstrip(" ")):]
    first.rstrip()
    console.print(first, soft_wrap=True)
    for part in rest.wrap(console, width - hang, overflow="fold"):
        part.rstrip()
        console.print(Text(" " * hang) + part, soft_wrap=True)


def render(
    report: Report, stream: TextIO, *, show_layers: bool = False, statistics: bool = False,
    depth: int | None = None, color: str | None = None, **_: Any
) -> None:
    console = make_console(stream, color)
    if statistics:
        render_statistics(report, console)
        return
    for model in report.models:
        render_model(model, console, show_layers=show_layers, depth=depth)
    print_summary(report, console)


def print_summary(report: Report, console: Console) -> None:
    console.print(summary_line(report), style=None if report.findings else "green")


def render_concise(report: Report, stream: TextIO, *, statistics: bool = False,
                   color: str | None = None, **_: Any) -> None:
    """``--output-format concise``: one line per finding, ``file:line: CODE message`` (ruff's)."""
    console = make_console(stream, color)
    if statistics:
        render_statistics(report, console)
        return
    for model in report.models:
        render_model_concise(model, console)
    print_summary(report, console)


def render_model_concise(model: ModelReport, console: Console) -> None:
    if model.error is not None:
        where = display_path(model.target) or model.target
        console.print(f"[bold]{escape(where)}[/bold]: [bold red]error[/bold red]: could not be "
                      f"analyzed: {escape(model.error)}")
    for f in model.findings:
        style = SEVERITY_STYLE.get(f.severity.value, "")
        console.print(f"[bold]{escape(location_text(f, model.target))}[/bold]: "
                      f"[bold {style}]{f.code}[/bold {style}] {escape(f.message)}")


def render_model(model: ModelReport, console: Console, *, show_layers: bool = False,
                 depth: int | None = None) -> None:
    lines = _model_lines(model)
    if not lines and not show_layers:
        return  # a clean model stays quiet, like ruff ('archlint sizes' prints its sizes)
    if model.sizes_summary:
        lines.append((f"  [dim]sizes:[/dim] {escape(model.sizes_summary)}", 4))
    console.print(f"[bold]{escape(model_title(model))}[/bold]")
    for line, hang in lines:
        print_hanging(console, line, hang)
    if show_layers and model.graph is not None:
        from archlint.reporters.layers import print_layer_summary

        print_layer_summary(console, model, depth=depth)
    console.print()


def model_title(model: ModelReport) -> str:
    target = display_path(model.target) or model.target
    if model.model and model.model != _stem(model.target):
        return f"{target} ({model.model})"
    return target


def _stem(target: str) -> str:
    name = target.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def _model_lines(model: ModelReport) -> list[tuple[str, int]]:
    """Markup lines with the hanging indent each wraps with."""
    lines = []
    if model.error is not None:
        lines.append((f"  [bold red]error[/bold red]: could not be analyzed: {escape(model.error)}", 4))
    for f in model.findings:
        head, *rest = finding_lines(f, model.target)
        lines.append((head, 6))
        lines.extend((line, _label_width(line)) for line in rest)
    if model.input_assumed and model.input_shapes:
        shapes = ", ".join("x".join(map(str, s)) for s in model.input_shapes)
        lines.append((f"  [dim]note: input shape {shapes} was assumed (pass --input-shape)[/dim]", 8))
    for note in model.notes:
        lines.append((f"  [dim]note: {escape(note)}[/dim]", 8))
    if model.confirm:
        lines.append((f"  [dim]confirm:[/dim] {escape(confirm_text(model.confirm))}", 11))
    return lines


def _label_width(line: str) -> int:
    """'      fix: use ...' wraps under 'use': the width of its indent and label."""
    plain = Text.from_markup(line).plain
    return len(plain) - len(plain.lstrip()) + len(plain.lstrip().split(" ", 1)[0]) + 1


def confirm_text(confirm: dict) -> str:
    """One line from the model's --confirm summary: its device, then its scalar facts."""
    facts = [f"{k} {v}" for k, v in confirm.items()
             if k != "device" and isinstance(v, (str, int, float, bool)) and v is not None]
    return f"on {confirm.get('device', '?')}" + (": " + ", ".join(facts) if facts else "")


def finding_lines(f: Finding, target: str) -> list[str]:
    style = SEVERITY_STYLE.get(f.severity.value, "")
    head = (
        f"  [bold]{escape(location_text(f, target))}[/bold]: "
        f"[bold {style}]{f.code}[/bold {style}] [{style}]{f.severity}[/{style}] {escape(f.message)}"
    )
    lines = [head]
    if f.fix:
        lines.append(f"      [green]fix:[/green] {escape(f.fix)}")
    if f.fix_note:
        lines.append(f"      [yellow]autofix:[/yellow] {escape(f.fix_note)}")
    elif f.autofix is not None and f.autofix.applicability.value != "display-only":
        flags = "--fix" if f.autofix.applicability.value == "safe" else "--fix --unsafe-fixes"
        lines.append(f"      [cyan]autofix:[/cyan] {escape(f.autofix.described)} "
                     f"({f.autofix.applicability}: archlint {flags})")
    if f.sizes:
        lines.append(f"      [dim]sizes:[/dim] {escape(f.sizes)}")
    if f.confirmation:
        status = f.confirmation.get("status", "")
        detail = f.confirmation.get("detail", "")
        lines.append(f"      [dim]confirm:[/dim] {escape(status)}" + (f" ({escape(detail)})" if detail else ""))
    return lines


def location_text(f: Finding, target: str) -> str:
    loc = f.location
    file = display_path(loc.file) or display_path(target) or target
    if loc.line:
        return f"{file}:{loc.line}"
    return f"{file} [{loc.node}]" if loc.node else file


def summary_line(report: Report) -> str:
    s = summary(report)
    parts = [
        _plural(s[key], word)
        for key, word in (("error", "error"), ("warning", "warning"), ("info", "info"))
        if s[key]
    ]
    failed = s["failed_targets"]
    failed_text = f" ({_plural(failed, 'target')} could not be analyzed)" if failed else ""
    if parts:
        with_findings = sum(1 for m in report.models if m.findings)
        return f"Found {', '.join(parts)} in {_plural(with_findings, 'model')}{failed_text}"
    if failed:
        if not s["models"]:
            return f"Nothing analyzed ({_plural(failed, 'target')} could not be analyzed)"
        return f"No findings in {_plural(s['models'], 'model')}{failed_text}"
    return "All checks passed"


def _plural(n: int, word: str) -> str:
    if word == "info":
        return f"{n} info"
    return f"{n} {word}" + ("" if n == 1 else "s")


def render_statistics(report: Report, console: Console) -> None:
    for code, rule_id, count in rule_statistics(report):
        console.print(f"{count:>5}  [bold]{code:<7}[/bold] {rule_id}")
    failed = report.failed_targets
    if failed:
        console.print(f"{len(failed):>5}  [bold red]{'error':<7}[/bold red] could not be analyzed: "
                      + escape(", ".join(dict.fromkeys(display_path(m.target) or m.target for m in failed))))


# --- --show layers (the table itself lives in reporters/layers.py) ---------------------------


def rf_text(rf: list | None, key: str, cause: dict | None = None) -> str:
    """Per-axis values joined by 'x' ("11x11", "(1/2)x(1/2)"); '?' for an unknown axis or RF;
    "global (attention at file:line)" where every axis reads the whole input."""
    if not rf:
        return "?"
    if all(axis is not None and axis.get("global") for axis in rf):
        return global_text(cause) if key == "size" else "-"
    return "x".join(_axis_value(axis, key) for axis in rf)


def _axis_value(axis: dict | None, key: str) -> str:
    if axis is not None and axis.get("global"):
        return "global"
    if axis is None or axis[key] is None:
        return "?"
    text = str(axis[key])
    return f"({text})" if "/" in text else text
