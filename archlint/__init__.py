"""archlint: a static linter and graph analyzer for neural-network architectures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["lint", "Report", "Finding", "Severity", "__version__"]

if TYPE_CHECKING:
    from archlint.api import lint
    from archlint.findings import Finding, Report, Severity


def __getattr__(name: str) -> Any:
    # Lazy, so `import archlint` (and the pytest plugin) stays cheap.
    if name == "lint":
        from archlint.api import lint

        return lint
    if name in ("Report", "Finding", "Severity"):
        from archlint import findings

        return getattr(findings, name)
    raise AttributeError(f"module 'archlint' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so that tab completion and dir(archlint) show archlint.lint.
    return sorted({*globals(), *__all__})
