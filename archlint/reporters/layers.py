"""``--show layers``: the model summary, one row per op (or per module with ``--depth N``).

Each row: the op's module-path name (the name findings use), op kind, output shape, receptive
field, parameters and MACs (counted as torchinfo does, see :mod:`archlint.passes.costs`) and
where it is built. The op where shape propagation failed is marked ``✗``; totals close the
table, as in torchinfo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archlint.findings import ModelReport
from archlint.reporters import global_cause, display_path, rf_to_json

FAILED_MARK = "\u2717"


@dataclass
class LayerRow:
    name: str
    op: str
    shape: tuple[int, ...] | None
    rf: list | str | None  # per-axis JSON, or "global" (every value sees the whole input)
    params: int | None
    macs: int | None
    location: str
    failed: bool = False
    ops: int = 1
    #: node names folded into this row
    members: list[str] = field(default_factory=list)
    #: the op that made the field global (attention, a token MLP...), for "global (... at f:l)"
    rf_cause: dict | None = None


def layer_rows(model: ModelReport, depth: int | None = None) -> list[LayerRow]:
    """Rows in graph order; with ``depth``, consecutive ops inside the same module below that
    depth fold into one row named after the module (params and MACs summed)."""
    g = model.graph
    if g is None:
        return []
    from archlint.graph import ops
    from archlint.passes.costs import cost_pass

    cost_pass(g)
    rows: list[LayerRow] = []
    for name in ops(g):
        data = g.nodes[name]
        loc = data.get("location")
        qualname = getattr(loc, "node", None) or name
        shapes = data.get("shapes")
        cost = data.get("cost")
        row = LayerRow(
            name=qualname,
            op=data.get("op") or "?",
            shape=tuple(shapes[0]) if shapes else None,
            rf="global" if data.get("rf_global") else rf_to_json(data.get("rf"),
                                                                  data.get("rf_global_axes")),
            rf_cause=global_cause(g, data.get("rf_global_cause")),
            params=getattr(cost, "params", None),
            macs=getattr(cost, "macs", None),
            location=_location(loc),
            failed=data.get("error") is not None,
            members=[name],
        )
        key = _fold_key(data.get("scope") or "", depth)
        last = rows[-1] if rows else None
        if key is not None and last is not None and last.name == key and last.op == "module":
            _absorb(last, row)
        elif key is not None:
            folded = LayerRow(key, "module", row.shape, row.rf, row.params, row.macs, row.location,
                              row.failed, 1, [name], row.rf_cause)
            rows.append(folded)
        else:
            rows.append(row)
    return rows


def _fold_key(scope: str, depth: int | None) -> str | None:
    if depth is None or not scope:
        return None
    parts = scope.split(".")
    if len(parts) <= depth:
        return None
    return ".".join(parts[:depth]) if depth > 0 else "(model)"


def _absorb(row: LayerRow, other: LayerRow) -> None:
    row.shape, row.rf, row.rf_cause = other.shape, other.rf, other.rf_cause  # a module's output is its last op's
    row.params = None if row.params is None or other.params is None else row.params + other.params
    row.macs = None if row.macs is None or other.macs is None else row.macs + other.macs
    row.failed = row.failed or other.failed
    row.ops += 1
    row.members.extend(other.members)


def _location(loc: Any) -> str:
    file = display_path(getattr(loc, "file", None))
    line = getattr(loc, "line", None)
    if file and line:
        return f"{file}:{line}"
    return file or ""


def count_text(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def compact(n: int | None) -> str:
    """4089238376 -> '4.09G' (MACs per row; the totals are printed exactly)."""
    if n is None:
        return "?"
    for scale, unit in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def layer_table(model: ModelReport, depth: int | None = None) -> Table:
    from archlint.reporters.text import rf_text

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column, justify in (
        ("name", "left"), ("op", "left"), ("output shape", "left"), ("RF size", "right"),
        ("RF stride", "right"), ("params", "right"), ("MACs", "right"), ("location", "left"),
    ):
        wraps = column in ("name", "location")
        table.add_column(column, justify=justify, no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis", min_width=8 if wraps else None)
    for row in layer_rows(model, depth):
        name = escape(row.name)
        if row.failed:
            name = f"[bold red]{FAILED_MARK} {name}[/bold red]"
        op = row.op if row.op != "module" else f"module ({row.ops} ops)"
        table.add_row(
            name, op,
            "x".join(map(str, row.shape)) if row.shape else "?",
            *(("global", "-") if row.rf == "global"
              else (rf_text(row.rf, "size", row.rf_cause), rf_text(row.rf, "stride"))),
            count_text(row.params), compact(row.macs), escape(row.location),
        )
    return table


def totals_lines(model: ModelReport) -> list[str]:
    from archlint.passes.costs import cost_pass

    if model.graph is None:
        return []
    t = cost_pass(model.graph)
    frozen = "" if t.trainable is None else f" (trainable {t.trainable:,}, frozen {t.frozen:,})"
    lines = [f"Total params: {count_text(t.params)}{frozen}",
             f"Total MACs: {count_text(t.macs)}" + (f" ({compact(t.macs)})" if t.macs else "")]
    if t.unattributed:
        lines.append(f"  of which {t.unattributed:,} params are read by no traced op")
    return lines


def print_layer_summary(console: Console, model: ModelReport, depth: int | None = None) -> None:
    from archlint.reporters.text import print_table

    print_table(console, layer_table(model, depth))
    for line in totals_lines(model):
        console.print(line)
