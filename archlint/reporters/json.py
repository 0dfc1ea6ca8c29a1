"""The versioned JSON report (``"version": 1``): the contract in DESIGN.md, one entry per model.

A target that could not be analyzed still gets an entry, with ``error`` set and no nodes.
"""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from archlint.findings import ModelReport, Report
from archlint.reporters import iter_node_rows, node_rows, rule_statistics, summary

VERSION = 1


def render(report: Report, stream: TextIO, *, statistics: bool = False, **_: Any) -> None:
    # One write of the whole text (json.dump's many small writes dominated large graphs), and
    # indented only for a person: indent= forces Python's slow pure-Python encoder.
    indent = 2 if getattr(stream, "isatty", lambda: False)() else None
    if statistics:
        text = json.dumps(statistics_to_json(report), indent=indent)
    elif indent is not None:
        text = json.dumps(report_to_json(report), indent=indent)
    else:
        text = _compact(report)
    stream.write(text + "\n")


def report_to_json(report: Report) -> dict[str, Any]:
    return {
        "version": VERSION,
        "models": [model_to_json(m) for m in report.models],
        "summary": summary(report),
    }


#: Where model i's node rows go in the compact text (NUL never occurs in a path or a message).
_NODES_MARK = "\x00archlint-nodes-{}\x00"
_NODES_MARKED = re.compile(r'"\\u0000archlint-nodes-(\d+)\\u0000"')
_ROWS_PER_CHUNK = 4096


def _compact(report: Report) -> str:
    """The report as compact JSON, each model's node rows encoded a chunk at a time: the rows
    of a large graph, as dicts, outweighed the graph itself at the peak."""
    skeleton = {
        "version": VERSION,
        "models": [model_to_json(m, nodes=_NODES_MARK.format(i)) for i, m in enumerate(report.models)],
        "summary": summary(report),
    }
    parts = _NODES_MARKED.split(json.dumps(skeleton))
    for i in range(1, len(parts), 2):
        parts[i] = _encoded_rows(report.models[int(parts[i])].graph)
    return "".join(parts)


def _encoded_rows(g: Any) -> str:
    chunks: list[str] = []
    rows: list[dict[str, Any]] = []
    for row in iter_node_rows(g):
        rows.append(row)
        if len(rows) == _ROWS_PER_CHUNK:
            chunks.append(json.dumps(rows)[1:-1])
            rows = []
    if rows:
        chunks.append(json.dumps(rows)[1:-1])
    return "[" + ", ".join(chunks) + "]"


def model_to_json(m: ModelReport, *, nodes: Any = None) -> dict[str, Any]:
    """One model's entry; ``nodes`` replaces the node rows (a placeholder to fill later)."""
    return {
        "target": m.target,
        "model": m.model,
        "frontend": m.frontend,
        "input_shapes": [list(s) for s in m.input_shapes],
        "input_assumed": m.input_assumed,
        "nodes": node_rows(m.graph) if nodes is None else nodes,
        "findings": [f.to_json() for f in m.findings],
        "admissible_sizes": jsonable(m.admissible_sizes),
        "sizes_summary": m.sizes_summary,
        "error": m.error,
        "notes": list(m.notes),
        "confirm": jsonable(m.confirm),
    }


def statistics_to_json(report: Report) -> dict[str, Any]:
    """``--statistics --format json``: one row per rule, most frequent first, as ruff's (code,
    name, count, fixable), plus the rule's severity and how many of its findings ``--fix`` can
    edit (``fixable_count``; ``unsafe_fixable_count`` of them only with ``--unsafe-fixes``);
    then the totals per severity and the targets that could not be analyzed."""
    rows = []
    for code, rule, n in rule_statistics(report):
        found = [f for f in report.findings if f.rule == rule]
        kinds = [_applicability(f) for f in found]
        fixable = sum(k in ("safe", "unsafe") for k in kinds)
        rows.append({"code": code, "name": rule, "rule": rule, "severity": found[0].severity.value,
                     "count": n, "fixable": fixable > 0, "fixable_count": fixable,
                     "unsafe_fixable_count": kinds.count("unsafe")})
    counts = summary(report)
    return {
        "version": VERSION,
        "rules": rows,
        "totals": {key: counts[key] for key in ("findings", "error", "warning", "info")}
        | {"fixable": sum(r["fixable_count"] for r in rows)},
        "failed_targets": [{"target": m.target, "error": m.error}
                           for m in report.models if m.error is not None],
    }


def _applicability(f: Any) -> str | None:
    fix = getattr(f, "autofix", None)
    return None if fix is None else getattr(fix.applicability, "value", fix.applicability)


def jsonable(value: Any) -> Any:
    """Facts written by passes may hold tuples, Fractions or numpy scalars: make them plain."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_fallback))


def _fallback(value: Any) -> Any:
    from archlint.reporters import number_to_json

    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return number_to_json(value)
