"""The versioned JSON report (``"version": 1``): the contract in DESIGN.md, one entry per model.

A target that could not be analyzed still gets an entry, with ``error`` set and no nodes.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from typing import Any, TextIO

from archlint.findings import ModelReport, Report
from archlint.reporters import (
    global_cause,
    node_rows,
    number_to_json,
    rule_statistics,
    summary,
)

#: what json.dumps uses for a str with its default ensure_ascii=True
_encode_str = json.encoder.encode_basestring_ascii

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
    """The rows of :func:`iter_node_rows`, as ``json.dumps`` writes them, written a field at a
    time: building a dict per node and encoding it was most of the report's cost on a large
    graph, and a node's field (shared along a chain), cause and file repeat from node to node."""
    if g is None:
        return "[]"
    from archlint.graph import Location, node_table, ops

    nodes = node_table(g)
    encoded: dict[Any, str] = {}  # the JSON text of values that repeat: fields, causes, files

    def once(key: Any, value: Any) -> str:
        text = encoded.get(key)
        if text is None:
            text = encoded[key] = json.dumps(value)
        return text

    out: list[str] = []
    append = out.append
    shape_texts: dict[int, tuple[Any, str]] = {}  # by id: nodes share their shape tuples
    field_texts: dict[Any, str] = {}
    axis_texts: dict[int, str] = {}
    last_file: Any = object()
    file_text = ""
    for name in ops(g):
        data = nodes[name]
        shapes, loc = data["shapes"], data["location"]  # add_op writes both on every node
        if type(loc) is Location:
            file, line, node = loc.file, loc.line, loc.node
        else:
            file, line = getattr(loc, "file", None), getattr(loc, "line", None)
            node = getattr(loc, "node", name)
        if file is not last_file:  # the nodes of one model mostly share one file
            last_file, file_text = file, once(("file", file), file)
        shape = shapes[0] if shapes else None
        if shape is None:
            shape_text = "null"
        else:
            known = shape_texts.get(id(shape))
            if known is None:  # the entry keeps the tuple alive, so its id is not reused
                known = shape_texts[id(shape)] = (shape, _ints(shape))
            shape_text = known[1]
        cause = data.get("rf_global_cause")
        op = data["op"]
        name_text = _encode_str(name) if type(name) is str else json.dumps(name)
        append(
            f'{{"name": {name_text}'
            f', "op": {_encode_str(op) if type(op) is str else json.dumps(op)}'
            f', "shape": {shape_text}'
            f', "rf": {_field_text(data.get("rf"), data.get("rf_global_axes"), field_texts, axis_texts)}'
            ', "rf_global_cause": '
            f'{"null" if cause is None else once(("cause", cause), global_cause(g, cause))}'
            f', "location": {{"file": {file_text}'
            f', "line": {"null" if line is None else json.dumps(line)}'
            f', "node": {name_text if node == name else _text(node)}}}}}'
        )
    return "[" + ", ".join(out) + "]"


_GLOBAL_AXIS = '{"size": null, "stride": null, "padding": null, "global": true}'


def _field_text(rf: Any, flags: Any, fields: dict[Any, str], axes: dict[int, str]) -> str:
    """``json.dumps(rf_to_json(rf, flags))``, without the dicts. Nodes share field tuples (a
    pointwise op keeps its input's) and fields share axis records (a square field is one record
    twice), so both texts are kept by id: the graph keeps every record alive while we run."""
    key = id(rf) if not flags else (id(rf), tuple(flags))
    text = fields.get(key)
    if text is None:
        if rf is None:
            text = "null"
        else:
            flags = tuple(flags or ())
            parts = []
            for i, axis in enumerate(rf):
                if i < len(flags) and flags[i]:
                    parts.append(_GLOBAL_AXIS)
                elif axis is None:
                    parts.append("null")
                else:
                    axis_text = axes.get(id(axis))
                    if axis_text is None:
                        axis_text = axes[id(axis)] = (
                            f'{{"size": {_number(axis.size)}, "stride": {_number(axis.stride)}, '
                            f'"padding": {_number(axis.padding)}, "global": false}}')
                    parts.append(axis_text)
            text = "[" + ", ".join(parts) + "]"
        fields[key] = text
    return text


def _number(value: Any) -> str:
    """``json.dumps(number_to_json(value))``, the integral cases first."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is Fraction and value.denominator == 1:
        return int.__repr__(value.numerator)
    return json.dumps(number_to_json(value))


def _text(value: Any) -> str:
    return _encode_str(value) if type(value) is str else json.dumps(value)


def _ints(shape: Any) -> str:
    if all(type(d) is int for d in shape):
        return "[" + ", ".join(map(int.__repr__, shape)) + "]"
    return json.dumps(list(shape))


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
