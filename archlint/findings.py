"""Findings and reports: the records every reporter and the pytest plugin consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from archlint.graph import Location

if TYPE_CHECKING:
    import networkx as nx

    from archlint.fixes.model import Fix


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]

    def __str__(self) -> str:
        return self.value


@dataclass
class Finding:
    rule: str
    code: str
    severity: Severity
    message: str
    location: Location
    fix: str | None = None
    #: Human summary of the input sizes at which it fires / which avoid it (from the sweep).
    sizes: str | None = None
    #: Other places involved (the cause of a mismatch, the other branch).
    related: list[Location] = field(default_factory=list)
    #: Filled by confirm: {"status": "confirmed"|"refuted"|"not-checked", "detail": str}.
    confirmation: dict[str, str] | None = None
    #: The rule's fix as data (edits + applicability), which ``--fix`` applies; see archlint.fixes.
    autofix: "Fix | None" = None
    #: What ``--fix`` did about it when it is still reported: why it was not fixed or rolled back.
    fix_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
            "location": {
                "file": self.location.file,
                "line": self.location.line,
                "node": self.location.node,
            },
        }
        if self.sizes is not None:
            out["sizes"] = self.sizes
        if self.related:
            out["related"] = [
                {"file": r.file, "line": r.line, "node": r.node} for r in self.related
            ]
        if self.confirmation is not None:
            out["confirmation"] = self.confirmation
        if self.autofix is not None:
            out["autofix"] = self.autofix.to_json()
        if self.fix_note is not None:
            out["fix_note"] = self.fix_note
        return out


@dataclass
class ModelReport:
    """The result for one model (or one target that could not be analyzed)."""

    target: str
    frontend: str
    model: str | None = None
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    input_assumed: bool = False
    graph: "nx.DiGraph | None" = None
    findings: list[Finding] = field(default_factory=list)
    #: One-line reason this target could not be analyzed (exit 2), else None.
    error: str | None = None
    #: Things the user should know that are not findings (capture stopped at X, input assumed).
    notes: list[str] = field(default_factory=list)
    admissible_sizes: dict[str, Any] | None = None
    #: One-line summary of admissible sizes for the text report.
    sizes_summary: str | None = None
    confirm: dict[str, Any] | None = None

    def __repr__(self) -> str:
        ops = "no graph" if self.graph is None else f"{self.graph.number_of_nodes()} ops"
        parts = [f"target={self.target!r}", f"model={self.model!r}", f"frontend={self.frontend!r}",
                 ops, f"findings={len(self.findings)}"]
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        if self.sizes_summary:
            parts.append(f"sizes={self.sizes_summary!r}")
        return f"ModelReport({', '.join(parts)})"

    def _repr_html_(self) -> str:
        return Report(models=[self])._repr_html_()


@dataclass
class Report:
    models: list[ModelReport] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for m in self.models for f in m.findings]

    @property
    def failed_targets(self) -> list[ModelReport]:
        return [m for m in self.models if m.error is not None]

    def __repr__(self) -> str:
        from collections import Counter

        counts = Counter(f.severity.value for f in self.findings)
        tally = ", ".join(f"{counts[s]} {s}" + ("s" if counts[s] != 1 and s != "info" else "")
                          for s in ("error", "warning", "info") if counts[s])
        lines = [f"Report({len(self.models)} model{'s' if len(self.models) != 1 else ''}, "
                 f"{len(self.findings)} finding{'s' if len(self.findings) != 1 else ''}"
                 + (f": {tally}" if tally else "") + ")"]
        for m in self.models[:20]:
            name = m.target + (f" ({m.model})" if m.model else "")
            state = f"error: {m.error}" if m.error else f"{len(m.findings)} findings"
            lines.append(f"  {name}: {state}")
        if len(self.models) > 20:
            lines.append(f"  ... and {len(self.models) - 20} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The HTML report inline in a notebook, isolated in an iframe (its styles and scripts
        stay out of the notebook's page)."""
        import html

        from archlint.reporters.html import report_to_html

        page = html.escape(report_to_html(self), quote=True)
        return (f'<iframe srcdoc="{page}" style="width:100%;height:760px;border:1px solid #d0d7de" '
                'title="archlint report"></iframe>')

    def exit_code(self, fail_on: str | Severity = Severity.WARNING) -> int:
        """2 if a target could not be analyzed, else 1 if a finding is at/above fail_on, else 0."""
        if self.failed_targets:
            return 2
        level = Severity(fail_on).rank
        return 1 if any(f.severity.rank >= level for f in self.findings) else 0

    def assert_clean(self, fail_on: str | Severity = Severity.WARNING) -> None:
        """Raise AssertionError listing every finding at or above ``fail_on``."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        level = Severity(fail_on).rank
        lines = []
        for m in self.models:
            if m.error is not None:
                lines.append(f"{m.target}: could not be analyzed: {m.error}")
            for f in m.findings:
                if f.severity.rank >= level:
                    where = str(f.location)
                    if not f.location.line and f.location.file:
                        where += f" ({f.location.node})"  # no line (ONNX): name the node
                    lines.append(
                        f"{where} [{f.rule}] {f.severity}: {f.message}"
                        + (f"\n    fix: {f.fix}" if f.fix else "")
                    )
        if lines:
            raise AssertionError(
                f"archlint found {len(lines)} problem(s) at or above {Severity(fail_on)}:\n"
                + "\n".join(lines)
            )
