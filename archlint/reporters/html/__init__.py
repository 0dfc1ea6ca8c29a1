"""The HTML report: one self-contained page that opens offline and makes no network request.

Files:

- ``__init__.py`` (here): the page's data, one JSON record per model: ops with their shape,
  receptive field, parameters, MACs and ``file:line``; module groups; findings with the ops
  they sit on (and, for a skip mismatch, the fork -> divergence path);
- ``plots.py``: the receptive-field growth plot and the admissible-sizes strip (inline SVG);
- ``report.js`` / ``report.css``: the viewer. The graph is laid out top-down by dagre (vendored
  as ``dagre.min.js``, MIT) every time a module is expanded or collapsed; modules start
  collapsed until the page shows about 120 boxes, so a 2,000-op graph opens quickly.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, TextIO

import networkx as nx

from archlint.findings import Finding, ModelReport, Report
from archlint.reporters import display_path, rf_to_json, summary

#: A level with more direct members than this is split into consecutive chunks (flat graphs).
CHUNK_ABOVE = 60
CHUNK_SIZE = 40


def render(report: Report, stream: TextIO, **_: Any) -> None:
    stream.write(report_to_html(report))


def report_to_html(report: Report, *, title: str = "archlint report") -> str:
    data = {
        "summary": summary(report),
        "models": [model_data(m, i) for i, m in enumerate(report.models)],
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = _asset("template.html")
    return (
        template.replace("{{title}}", html.escape(title))
        .replace("{{css}}", _asset("report.css"))
        .replace("{{dagre}}", _asset("dagre.min.js"))
        .replace("{{js}}", _asset("report.js"))
        .replace("{{data}}", payload)
    )


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


# --- one model -------------------------------------------------------------------------------


def model_data(m: ModelReport, index: int) -> dict[str, Any]:
    from archlint.reporters.html.plots import rf_plot_svg, sizes_strip_svg
    from archlint.reporters.text import model_title

    out: dict[str, Any] = {
        "id": f"m{index}",
        "title": model_title(m),
        "frontend": m.frontend,
        "input_shapes": [list(s) for s in m.input_shapes],
        "error": m.error,
        "notes": list(m.notes),
        "sizes_summary": m.sizes_summary,
        "nodes": [],
        "edges": [],
        "groups": [],
        "findings": [],
        "totals": None,
        "rf_plot": "",
        "sizes_strip": "",
    }
    g = m.graph
    if g is None:
        out["findings"] = [_finding(f, m.target, {}, None) for f in m.findings]
        return out
    from archlint.graph import ops
    from archlint.passes.costs import cost_pass

    totals = cost_pass(g)
    names = list(ops(g))
    index_of = {n: i for i, n in enumerate(names)}
    by_qualname: dict[str, list[int]] = {}
    for n in names:
        loc = g.nodes[n].get("location")
        by_qualname.setdefault(getattr(loc, "node", n), []).append(index_of[n])
    groups, group_of = _groups(g, names)
    out["groups"] = groups
    out["nodes"] = [_node(g, n, group_of[n]) for n in names]
    out["edges"] = [[index_of[u], index_of[v]] for u, v in g.edges if u in index_of and v in index_of]
    out["findings"] = [_finding(f, m.target, by_qualname, g, index_of) for f in m.findings]
    out["totals"] = {
        "params": totals.params, "trainable": totals.trainable, "frozen": totals.frozen,
        "macs": totals.macs, "unattributed": totals.unattributed,
    }
    out["rf_plot"] = rf_plot_svg(g, m.input_shapes)
    out["sizes_strip"] = sizes_strip_svg(m.admissible_sizes, m.input_shapes, m.sizes_summary)
    return out


def _node(g: nx.DiGraph, name: str, group: int | None) -> dict[str, Any]:
    data = g.nodes[name]
    loc = data.get("location")
    shapes = data.get("shapes")
    cost = data.get("cost")
    rf = rf_to_json(data.get("rf"), data.get("rf_global_axes"))
    return {
        "name": getattr(loc, "node", None) or name,
        "op": data.get("op"),
        "origin": data.get("origin") or "",
        "shape": list(shapes[0]) if shapes else None,
        "rf": rf,
        "rf_global": bool(data.get("rf_global")),
        "file": display_path(getattr(loc, "file", None)),
        "line": getattr(loc, "line", None),
        "error": data.get("error"),
        "params": getattr(cost, "params", None),
        "trainable": getattr(cost, "trainable", None),
        "macs": getattr(cost, "macs", None),
        "attrs": _attrs_text(data.get("attrs")),
        "g": group,
    }


def _attrs_text(attrs: Any) -> dict[str, str]:
    """The attributes that differ from their defaults, as short strings for the details pane."""
    if attrs is None:
        return {}
    from dataclasses import fields

    out = {}
    for f in fields(attrs):
        value = getattr(attrs, f.name)
        if f.name == "extra" or value == f.default or value in ((), None, ""):
            continue
        out[f.name] = str(value)
    for key, value in getattr(attrs, "extra", {}).items():
        out[key] = str(value)
    return out


# --- module groups ---------------------------------------------------------------------------


def _groups(g: nx.DiGraph, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
    """Module groups (a tree) and the group of each op.

    An op belongs to the module it runs in (a layer to its parent module). Groups holding one
    op are dropped; a level with more than CHUNK_ABOVE members (a flat ONNX graph) is split
    into consecutive chunks, so that no collapsed view is a wall of boxes.
    """
    path_of: dict[str, tuple[str, ...]] = {}
    for n in names:
        data = g.nodes[n]
        scope = data.get("scope") or ""
        qualname = getattr(data.get("location"), "node", None) or n
        parts = tuple(p for p in scope.split(".") if p) if scope else ()
        if scope and scope == qualname:
            parts = parts[:-1]  # a layer sits in the module that owns it
        path_of[n] = parts
    members: dict[tuple[str, ...], int] = {}
    for parts in path_of.values():
        for k in range(1, len(parts) + 1):
            members[parts[:k]] = members.get(parts[:k], 0) + 1
    # Drop single-op groups (and the empty prefix levels above a lone path).
    for n, parts in path_of.items():
        while parts and members.get(parts, 0) < 2:
            parts = parts[:-1]
        path_of[n] = parts

    groups: list[dict[str, Any]] = []
    ids: dict[tuple[str, ...], int] = {}

    def group_id(parts: tuple[str, ...]) -> int | None:
        if not parts:
            return None
        if parts not in ids:
            parent = group_id(parts[:-1])
            ids[parts] = len(groups)
            groups.append({"label": ".".join(parts), "parent": parent})
        return ids[parts]

    group_of = {n: group_id(path_of[n]) for n in names}
    _chunk(groups, group_of, names)
    return groups, group_of


def _chunk(groups: list[dict[str, Any]], group_of: dict[str, int | None], names: list[str]) -> None:
    """Split over-full levels into consecutive chunks (repeatedly: chunks of chunks)."""
    while True:
        children: dict[int | None, list[tuple[str, Any]]] = {}
        seen_groups: set[int] = set()
        for n in names:
            gid = group_of[n]
            children.setdefault(gid, []).append(("op", n))
            # a child group is a member of its parent's level at its first op
            child = gid
            while child is not None:
                parent = groups[child]["parent"]
                if child not in seen_groups:
                    seen_groups.add(child)
                    children.setdefault(parent, []).append(("group", child))
                child = parent
        full = [(level, items) for level, items in children.items() if len(items) > CHUNK_ABOVE]
        if not full:
            return
        for level, items in full:
            label = groups[level]["label"] + " " if level is not None else ""
            per = max(CHUNK_SIZE, -(-len(items) // CHUNK_SIZE))
            for start in range(0, len(items), per):
                batch = items[start:start + per]
                chunk = len(groups)
                first, last = start + 1, start + len(batch)
                groups.append({"label": f"{label}[{first}-{last}]", "parent": level, "chunk": True})
                for kind, item in batch:
                    if kind == "op":
                        group_of[item] = chunk
                    else:
                        groups[item]["parent"] = chunk


# --- findings --------------------------------------------------------------------------------


def _finding(f: Finding, target: str, by_qualname: dict[str, list[int]], g: nx.DiGraph | None,
             index_of: dict[str, int] | None = None) -> dict[str, Any]:
    from archlint.reporters.text import location_text

    out: dict[str, Any] = {
        "code": f.code,
        "rule": f.rule,
        "severity": f.severity.value,
        "message": f.message,
        "fix": f.fix,
        "sizes": f.sizes,
        "where": location_text(f, target),
        "nodes": list(by_qualname.get(f.location.node, [])),
        "path": [],
        "diverge": [],
    }
    if g is not None and index_of and f.rule == "skip-connection-mismatch":
        merges = [n for n in out["nodes"]]
        names = list(index_of)
        for i in merges:
            path, diverge = skip_path(g, names[i])
            if path:
                out["path"] = [index_of[n] for n in path if n in index_of]
                out["diverge"] = [index_of[n] for n in diverge if n in index_of]
                break
    return out


def skip_path(g: nx.DiGraph, merge: str) -> tuple[list[str], list[str]]:
    """The ops from the fork to the merge along both disagreeing branches, and the ops where
    the branches' sizes depart from each other: the same walk skip-connection-mismatch makes."""
    try:
        from archlint_rules._merge_mismatch import branch, disagreements, trace_cause
    except ImportError:  # the built-in rules are not installed: no path to draw
        return [], []
    found = disagreements(g, merge)
    if not found:
        return [], []
    d = found[0]
    cause = trace_cause(g, d)
    if cause is None:
        return [], []
    path: list[str] = []
    for end in (d.ref, d.other):
        for n in branch(g, cause.fork, end) or []:
            if n not in path:
                path.append(n)
    path.append(merge)
    return path, [s.node for s in cause.steps]
