"""Helpers for architecture tests, usable without the pytest fixture.

    from archlint.testing import assert_clean

    def test_unet():
        assert_clean("models/unet.py", example_inputs=(1, 3, 256, 256), ignore=["pool-drops-border"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archlint.findings import Report

__all__ = ["assert_clean", "lint_with_config"]


def assert_clean(model_or_path: Any, example_inputs: Any = None, fail_on: str = "warning",
                 **options: Any) -> "Report":
    """Lint and raise AssertionError listing every finding at or above ``fail_on``.

    Each listed finding shows its location, rule id, severity, message and fix. A target that
    could not be analyzed fails too. Returns the report when it is clean. Unlike the pytest
    fixture, it reads only ``[tool.archlint]`` and its arguments, not pytest's options or markers.
    """
    __tracebackhide__ = True
    report = lint_with_config(model_or_path, example_inputs, **options)
    report.assert_clean(fail_on)
    return report


def lint_with_config(model_or_path: Any, example_inputs: Any = None, **options: Any) -> "Report":
    """``archlint.lint`` where ``ignore``/``extend_select`` add to ``[tool.archlint]``."""
    from archlint.api import lint
    from archlint.config import load_config

    start = Path(model_or_path).parent if isinstance(model_or_path, (str, Path)) else Path.cwd()
    config = load_config(start)
    for key in ("ignore", "extend_select"):
        if key in options:
            options[key] = (*getattr(config, key), *rule_list(options[key]))
    if "select" in options:
        options["select"] = rule_list(options["select"])
    return lint(model_or_path, example_inputs, config=config, **options)


def rule_list(value: Any) -> tuple[str, ...]:
    """Rule selectors from None, ``"a,b"``, or a list of such strings."""
    if value is None:
        return ()
    groups = [value] if isinstance(value, str) else value
    return tuple(v.strip() for group in groups for v in str(group).split(",") if v.strip())
