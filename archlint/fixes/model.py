"""What a rule declares as its fix: edits to a layer's construction call, and how safe they are.

As in ruff, the rule decides and the engine applies: a rule attaches a :class:`Fix` (data, no
code) to its finding; ``archlint --fix`` turns it into a source edit with libcst, re-lints, and
keeps it only if the finding is gone and the model still builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

from archlint.graph import Location

#: A value a fix may write: what ``repr`` turns into Python source that means the same.
Literal = int | float | bool | str | None | tuple


class Applicability(str, Enum):
    """ruff's three kinds. SAFE keeps every output shape and every parameter tensor's shape;
    UNSAFE changes shapes or weights (a checkpoint may no longer load); DISPLAY_ONLY is shown,
    never applied."""

    SAFE = "safe"
    UNSAFE = "unsafe"
    DISPLAY_ONLY = "display-only"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CallEdit:
    """Set keyword arguments of the layer constructor called at ``location``.

    ``callee`` is the class the call constructs (``Conv2d``); ``arguments`` maps each parameter
    name to the value it gets, whether the call passes it by position, by keyword, or not at all.
    ``reads`` names the parameters the values were computed from: they must be literals at the
    call, or the numbers would be right for one layer the call builds and wrong for another.
    """

    location: Location
    callee: str
    arguments: tuple[tuple[str, Literal], ...]
    reads: tuple[str, ...] = ()

    @property
    def described(self) -> str:
        return ", ".join(f"{name}={_source(value)}" for name, value in self.arguments)


@dataclass(frozen=True)
class Fix:
    edits: tuple[CallEdit, ...]
    applicability: Applicability
    #: Why it is unsafe (or safe), for the report.
    reason: str = ""

    @property
    def described(self) -> str:
        return "; ".join(e.described for e in self.edits)

    def to_json(self) -> dict[str, Any]:
        return {
            "applicability": self.applicability.value,
            "edits": [
                {"file": e.location.file, "line": e.location.line, "callee": e.callee,
                 "arguments": {name: _jsonable(v) for name, v in e.arguments}}
                for e in self.edits
            ],
        }


def call_fix(
    node: Mapping[str, Any],
    arguments: Mapping[str, Literal],
    applicability: Applicability,
    *,
    reads: Iterable[str] = (),
    reason: str = "",
) -> Fix | None:
    """A one-edit fix on the construction call of the graph node ``node`` (its ``location``
    and ``origin``, like ``nn.Conv2d``). The engine checks that the call can be edited; an ONNX
    node (no source line) gets no fix."""
    location: Location = node["location"]
    if location.file is not None and location.file.lower().endswith(".onnx"):
        return None
    callee = (node.get("origin") or "").rsplit(".", 1)[-1]
    edit = CallEdit(location, callee, tuple(arguments.items()), tuple(reads))
    return Fix((edit,), applicability, reason)


def source_fix(
    location: Location,
    callee: str,
    arguments: Mapping[str, Literal],
    applicability: Applicability,
    *,
    reads: Iterable[str] = (),
    reason: str = "",
) -> Fix:
    """A one-edit fix on the ``callee(...)`` call at ``location`` (rules that read the source)."""
    return Fix((CallEdit(location, callee, tuple(arguments.items()), tuple(reads)),),
               applicability, reason)


def per_axis(values: Sequence[int]) -> int | tuple[int, ...]:
    """How PyTorch takes a per-axis value: one int when every axis agrees, else a tuple."""
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else tuple(values)


def _source(value: Literal) -> str:
    return repr(value)


def _jsonable(value: Literal) -> Any:
    return list(value) if isinstance(value, tuple) else value
