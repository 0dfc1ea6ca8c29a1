"""The versioned JSON report (``"version": 1``): the contract in DESIGN.md, one entry per model.

A target that could not be analyzed still gets an entry, with ``error`` set and no nodes.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from archlint.findings import ModelReport, Report
from archlint.reporters import node_rows, rule_statistics, summary

VERSION = 1


def render(report: Report, stream: TextIO, *, statistics: bool = False, **_: Any) -> None:
    data: Any = statistics_to_json(report) if statistics else report_to_json(report)
    # One write of the whole text (json.dump's many small writes dominated large graphs), and
    # indented only for a person: indent= forces Python's slow pure-Python encoder.
    indent = 2 if getattr(stream, "isatty", lambda: False)() else None
    stream.write(json.dumps(data, indent=indent) + "\n")


def report_to_json(report: Report) -> dict[str, Any]:
    return {
        "version": VERSION,
        "models": [model_to_json(m) for m in report.models],
        "summary": summary(report),
    }


def model_to_json(m: ModelReport) -> dict[str, Any]:
    return {
        "target": m.target,
        "model": m.model,
        "frontend": m.frontend,
        "input_shapes": [list(s) for s in m.input_shapes],
        "input_assumed": m.input_assumed,
        "nodes": node_rows(m.graph),
        "findings": [f.to_json() for f in m.findings],
        "admissible_sizes": jsonable(m.admissible_sizes),
        "sizes_summary": m.sizes_summary,
        "error": m.error,
        "notes": list(m.notes),
        "confirm": jsonable(m.confirm),
    }


def statistics_to_json(report: Report) -> list[dict[str, Any]]:
    return [{"code": code, "rule": rule, "count": n} for code, rule, n in rule_statistics(report)]


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
