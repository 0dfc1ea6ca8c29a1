"""Frontends turn a target into graphs; they describe, they never judge.

Contract shared by ``archlint.frontends.torch`` and ``archlint.frontends.onnx``:

* ``capture_file(path, options) -> list[Capture]`` for a file target;
* a whole-target failure (file unreadable, syntax error, import raised, no model found) raises
  :class:`TargetError` with a one-line reason;
* a model that was found but could not be built or traced gives a ``Capture`` with
  ``graph=None`` and ``error`` set, so rules that read source can still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


class TargetError(Exception):
    """A target that cannot be analyzed at all; ``str(exc)`` is the one-line reason."""


@dataclass
class Capture:
    name: str
    graph: "nx.DiGraph | None"
    error: str | None = None
    notes: list[str] = field(default_factory=list)
