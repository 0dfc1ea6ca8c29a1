"""Reporters: turn a :class:`~archlint.findings.Report` into text, JSON, SARIF, GitHub lines or
a self-contained HTML page (``reporters/html/``).

Each reporter module has ``render(report, stream, *, show_layers=False, statistics=False)``.
The helpers here are the facts every format shares, read from the report (and, for the layer
table and JSON ``nodes``, from the model's graph) without judging anything.
"""

from __future__ import annotations

import os
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from archlint.findings import Finding, Report, Severity

if TYPE_CHECKING:
    import networkx as nx

FORMATS = ("text", "concise", "json", "sarif", "github", "html")


def get_renderer(fmt: str) -> Callable[..., None]:
    if fmt == "text":
        from archlint.reporters.text import render
    elif fmt == "json":
        from archlint.reporters.json import render
    elif fmt == "sarif":
        from archlint.reporters.sarif import render
    elif fmt == "github":
        from archlint.reporters.github import render
    elif fmt == "html":
        from archlint.reporters.html import render
    elif fmt == "concise":
        from archlint.reporters.text import render_concise as render
    else:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return render


def render(report: Report, fmt: str, stream: TextIO, **options: Any) -> None:
    get_renderer(fmt)(report, stream, **options)


def display_path(file: str | os.PathLike | None, start: str | None = None) -> str | None:
    """``file`` relative to the working directory when it lies below it, else as given."""
    if file is None:
        return None
    path = Path(file)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path(start or os.getcwd())).as_posix()
    except ValueError:
        return str(path)


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    counts = Counter(f.severity.value for f in findings)
    return {s.value: counts.get(s.value, 0) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)}


def rule_statistics(report: Report) -> list[tuple[str, str, int]]:
    """(code, rule id, count) per rule, most frequent first, like ``ruff --statistics``."""
    counts = Counter((f.code, f.rule) for f in report.findings)
    return [(code, rule, n) for (code, rule), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def summary(report: Report) -> dict[str, Any]:
    """The counts the JSON summary and the text summary line share."""
    targets = list(dict.fromkeys(m.target for m in report.models))
    failed = list(dict.fromkeys(m.target for m in report.models if m.error is not None))
    counts = severity_counts(report.findings)
    return {
        "findings": sum(counts.values()),
        **counts,
        "models": sum(1 for m in report.models if m.error is None),
        "targets": len(targets),
        "failed_targets": len(failed),
    }


# --- the per-node table (``--show layers`` and JSON ``nodes``) -------------------------------


def node_rows(g: "nx.DiGraph | None") -> list[dict[str, Any]]:
    """One row per op, in graph order: name, op, shape, rf (JSON-able), location."""
    return list(iter_node_rows(g))


def iter_node_rows(g: "nx.DiGraph | None") -> Iterator[dict[str, Any]]:
    """:func:`node_rows` one row at a time."""
    if g is None:
        return
    from archlint.graph import node_table, ops

    nodes = node_table(g)
    # A chain of pointwise ops shares one field object: convert each once. The graph keeps
    # every field alive while we run, so its id is a safe key.
    rf_rows: dict[tuple[int, Any], Any] = {}
    for name in ops(g):
        data = nodes[name]
        shapes = data.get("shapes")
        loc = data.get("location")
        rf, flags = data.get("rf"), data.get("rf_global_axes")
        key = (id(rf), flags)
        rf_row = rf_rows.get(key)
        if rf_row is None:
            rf_row = rf_rows[key] = rf_to_json(rf, flags)
        yield {
            "name": name,
            "op": data.get("op"),
            "shape": list(shapes[0]) if shapes else None,
            "rf": rf_row,
            "rf_global_cause": global_cause(g, data.get("rf_global_cause")),
            "location": {
                "file": getattr(loc, "file", None),
                "line": getattr(loc, "line", None),
                "node": getattr(loc, "node", name),
            },
        }


def rf_to_json(rf: Any, global_axes: Any = None) -> list[dict[str, Any] | None] | None:
    """A node's receptive field, per axis ``{"size", "stride", "padding", "global"}``; None if
    unknown. A global axis (every value reads the whole input along it) has null size, stride
    and padding and ``"global": true``."""
    if rf is None:
        return None
    flags = tuple(global_axes or ())
    out: list[dict[str, Any] | None] = []
    for i, axis in enumerate(rf):
        if i < len(flags) and flags[i]:
            out.append({"size": None, "stride": None, "padding": None, "global": True})
        elif axis is None:
            out.append(None)
        else:
            out.append({
                "size": number_to_json(axis.size),
                "stride": number_to_json(axis.stride),
                "padding": number_to_json(axis.padding),
                "global": False,
            })
    return out


def global_cause(g: Any, node: str | None) -> dict[str, Any] | None:
    """The op that made the field global (attention, a token MLP...), for "global (attention at
    file:line)"."""
    if node is None or node not in g:
        return None
    loc = g.nodes[node].get("location")
    return {"node": node, "op": g.nodes[node].get("op"), "file": getattr(loc, "file", None),
            "line": getattr(loc, "line", None)}


def global_text(cause: dict[str, Any] | None) -> str:
    """'global (attention at vit.py:18)'."""
    if not cause:
        return "global"
    what = {"softmax": "attention", "matmul": "attention", "attention": "attention",
            "einsum": "attention", "linear": "token MLP", "reduce": "mean over tokens"}.get(
        cause.get("op") or "", cause.get("op") or "mixing")
    where = display_path(cause.get("file")) if cause.get("file") else cause.get("node")
    if cause.get("line"):
        where = f"{where}:{cause['line']}"
    elif cause.get("file"):
        where = f"{where} [{cause.get('node')}]"
    return f"global ({what} at {where})"


def number_to_json(value: Any) -> int | float | str | None:
    """Integral values as ints, other Fractions as ``"p/q"`` strings (exact), floats as floats."""
    if value is None or type(value) is int:  # the common case first: large graphs call this a lot
        return value
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)
