"""The rule record, the ``@rule`` decorator and the context a rule's check reads.

A rule module looks like::

    '''<What it does / Why is this bad? / Example / Use instead / References>'''
    from archlint.rule import rule

    @rule(id="kernel-stride-checkerboard", code="AL102", severity="warning",
          summary="transposed conv whose kernel is not a multiple of its stride")
    def kernel_stride_checkerboard(ctx):
        for name in ctx.nodes("conv_transpose"):
            ...
            yield ctx.finding(name, "message with numbers", fix="kernel_size=4, stride=2, padding=1")

and is registered in the ``archlint.rules`` entry-point group, whose value is the decorated object
(a :class:`Rule`), exactly as a third-party plugin would be. A rule whose first question is about
an op's attributes alone walks ``ctx.nodes_where(question, "conv")`` instead: the question is
asked once per distinct attrs record, not once per node of a large graph.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from archlint.findings import Finding, Severity
from archlint.graph import Location, ops, ops_of_kind, records_of_kinds, topological_rank

if TYPE_CHECKING:
    import networkx as nx

    from archlint.fixes.model import Fix

DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "References")


@dataclass(frozen=True)
class Rule:
    id: str
    code: str
    severity: Severity
    summary: str
    check: Callable[["RuleContext"], Iterable[Finding]]
    docs: str
    default_enabled: bool = True
    frontends: frozenset[str] = frozenset({"torch", "onnx"})
    #: True for rules that read the source file and must run even when no graph was built.
    reads_source: bool = False

    def __call__(self, ctx: "RuleContext") -> Iterable[Finding]:
        return self.check(ctx)


def rule(
    *,
    id: str,
    code: str,
    severity: str,
    summary: str,
    default_enabled: bool = True,
    frontends: Iterable[str] = ("torch", "onnx"),
    reads_source: bool = False,
) -> Callable[[Callable[["RuleContext"], Iterable[Finding]]], Rule]:
    """Turn a check function into a :class:`Rule`; its module docstring becomes the docs."""

    def wrap(check: Callable[["RuleContext"], Iterable[Finding]]) -> Rule:
        docs = (sys.modules[check.__module__].__doc__ or "").strip()
        return Rule(
            id=id,
            code=code,
            severity=Severity(severity),
            summary=summary,
            check=check,
            docs=docs,
            default_enabled=default_enabled,
            frontends=frozenset(frontends),
            reads_source=reads_source,
        )

    return wrap


@dataclass
class SourceFile:
    """A model's source text, parsed lazily (rules that read source, suppressions)."""

    path: Path
    text: str

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def tree(self) -> ast.Module | None:
        try:
            return ast.parse(self.text, filename=str(self.path))
        except SyntaxError:
            return None


@dataclass
class RuleContext:
    """What a rule's check reads. ``graph`` is None when the model could not be built."""

    graph: "nx.DiGraph | None"
    frontend: str
    target: str
    source: SourceFile | None = None
    rule: Rule | None = None

    def nodes(self, *kinds: str) -> Iterator[str]:
        """Node names in topological order, optionally only of the given op kinds."""
        if self.graph is None:
            return iter(())
        return iter(ops_of_kind(self.graph, *kinds)) if kinds else ops(self.graph)

    def nodes_where(self, keep: Callable[[Any], bool], *kinds: str) -> list[str]:
        """The nodes of ``kinds`` whose ``attrs`` record passes ``keep``, in topological order.

        ``keep`` reads only the record, and is asked once per distinct record of each kind:
        frontends share one record between nodes with equal attributes, so a rule about dilated
        convolutions asks once on a graph of ten thousand plain ones and then visits none.
        """
        if self.graph is None:
            return []
        groups = records_of_kinds(self.graph, *kinds)
        passing = [names for attrs, names in groups if keep(attrs)]
        if len(passing) == len(groups):
            return ops_of_kind(self.graph, *kinds)
        if len(passing) == 1:
            return list(passing[0])
        rank = topological_rank(self.graph)
        return sorted((n for names in passing for n in names), key=rank.__getitem__)

    def node(self, name: str) -> dict:
        # the node's attribute dict, read straight from networkx's store (graph.node_table):
        # rules call this once per visited node
        return self.graph._node[name]  # type: ignore[union-attr]

    def finding(
        self,
        node_or_location: str | Location,
        message: str,
        *,
        fix: str | None = None,
        severity: str | Severity | None = None,
        sizes: str | None = None,
        related: Iterable[Location] = (),
        autofix: "Fix | None" = None,
    ) -> Finding:
        """A finding of the running rule, located at a node's location (or a given Location)."""
        assert self.rule is not None, "finding() is only valid while a rule runs"
        if isinstance(node_or_location, Location):
            location = node_or_location
        else:
            assert self.graph is not None
            location = self.graph.nodes[node_or_location]["location"]
        return Finding(
            rule=self.rule.id,
            code=self.rule.code,
            severity=Severity(severity) if severity is not None else self.rule.severity,
            message=message,
            location=location,
            fix=fix,
            sizes=sizes,
            related=list(related),
            autofix=autofix,
        )

