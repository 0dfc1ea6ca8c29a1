"""The pytest plugin (``pytest11`` entry point): architecture tests in a project's test suite.

    def test_unet_is_clean(archlint):
        archlint("models/unet.py", example_inputs=(1, 3, 256, 256)).assert_clean()

    @pytest.mark.archlint(ignore=["pool-drops-border"])
    def test_resnet(archlint):
        archlint.assert_clean(ResNet18(), example_inputs=torch.randn(1, 3, 224, 224))

Options (group "archlint"): ``--archlint-select``, ``--archlint-ignore`` (comma-separated,
repeatable), and ``--archlint``, which also collects every entry of ``[tool.archlint] models``
as a test item.

Where several places choose rules, ``select`` comes from the nearest one (the call, then the
marker, then the command line, then ``[tool.archlint]``), and every ``ignore`` adds up.

Every pytest run of every user loads this module, so it imports nothing heavy: torch, onnx and
networkx load only when a test actually lints something.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from archlint.testing import rule_list

if TYPE_CHECKING:
    from archlint.findings import Report

MARKER_KWARGS = ("select", "ignore", "extend_select", "fail_on")

_SELECTION = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("archlint", "architecture linting (archlint)")
    group.addoption("--archlint-select", action="append", default=[], metavar="RULES",
                    help="rules the archlint fixture runs (ids, codes or prefixes; comma-separated)")
    group.addoption("--archlint-ignore", action="append", default=[], metavar="RULES",
                    help="rules the archlint fixture skips (comma-separated)")
    group.addoption("--archlint", action="store_true", default=False,
                    help="also collect the models in [tool.archlint] models as test items")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "archlint(select=None, ignore=None, extend_select=None, fail_on=None): rule selection "
        "for the archlint fixture in this test",
    )
    config.stash[_SELECTION] = {
        "select": rule_list(config.getoption("archlint_select", default=[]) or []),
        "ignore": rule_list(config.getoption("archlint_ignore", default=[]) or []),
    }


def marker_options(item: pytest.Item) -> dict[str, Any]:
    """The merged kwargs of the item's archlint markers; a clear failure on an unknown one."""
    merged: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("archlint"))):  # closest marker last: it wins
        if mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.archlint takes keyword arguments only "
                f"({', '.join(MARKER_KWARGS)})"
            )
        unknown = sorted(set(mark.kwargs) - set(MARKER_KWARGS))
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.archlint got unknown argument(s) "
                f"{', '.join(unknown)}; known: {', '.join(MARKER_KWARGS)}"
            )
        merged.update(mark.kwargs)
    return merged


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so they apply to the model items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    for item in items:  # unknown marker arguments stop the run before anything runs
        marker_options(item)
    if config.getoption("archlint", default=False):
        model_items = _model_items(session, config)
        items.extend(model_items)
        if model_items:
            # Items added here were not collected by a collector: report them as collected,
            # so "collected N items" and `--co` count them (the terminal counts collect reports).
            report = pytest.CollectReport(model_items[0].parent.nodeid, "passed", None,
                                          result=model_items)
            config.hook.pytest_collectreport(report=report)


class ArchlintFixture:
    """What the ``archlint`` fixture returns: call it to lint, or use :meth:`assert_clean`."""

    def __init__(self, command_line: dict[str, tuple[str, ...]], marker: dict[str, Any]):
        self._command_line = command_line
        self._marker = marker

    def options(self, **call: Any) -> dict[str, Any]:
        """The lint options for one call: select from the nearest level, ignores added up."""
        select = (
            rule_list(call.pop("select", None))
            or rule_list(self._marker.get("select"))
            or self._command_line["select"]
        )
        ignore = (
            *self._command_line["ignore"],
            *rule_list(self._marker.get("ignore")),
            *rule_list(call.pop("ignore", None)),
        )
        extend = (*rule_list(self._marker.get("extend_select")), *rule_list(call.pop("extend_select", None)))
        out: dict[str, Any] = dict(call)
        if select:
            out["select"] = select
        if ignore:
            out["ignore"] = ignore
        if extend:
            out["extend_select"] = extend
        return out

    @property
    def fail_on(self) -> str:
        return self._marker.get("fail_on") or "warning"

    def __call__(self, model_or_path: Any, example_inputs: Any = None, **options: Any) -> "Report":
        __tracebackhide__ = True
        from archlint.config import ConfigError
        from archlint.testing import lint_with_config

        try:
            return lint_with_config(model_or_path, example_inputs, **self.options(**options))
        except ConfigError as exc:
            problem = str(exc)
        pytest.fail(f"archlint: {problem}", pytrace=False)  # outside except: no chained trace

    def assert_clean(self, model_or_path: Any, example_inputs: Any = None,
                     fail_on: str | None = None, **options: Any) -> "Report":
        __tracebackhide__ = True
        report = self(model_or_path, example_inputs, **options)
        report.assert_clean(fail_on or self.fail_on)
        return report


@pytest.fixture
def archlint(request: pytest.FixtureRequest) -> ArchlintFixture:
    """Lint a model (a path, an ``nn.Module`` or an ``onnx.ModelProto``) -> Report."""
    return ArchlintFixture(request.config.stash[_SELECTION], marker_options(request.node))


# --- --archlint: [tool.archlint] models as test items ----------------------------------------


class ArchlintModelItem(pytest.Item):
    """One entry of ``[tool.archlint] models`` ("path.py" or "path.py::name")."""

    def __init__(self, *, entry: str, project_dir: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.entry = entry
        self.project_dir = project_dir
        self.add_marker("archlint")

    def runtest(self) -> None:
        path, _, model = self.entry.partition("::")
        lint = ArchlintFixture(self.config.stash[_SELECTION], {})
        target = self.project_dir / path
        if not target.exists():
            raise ArchlintItemError(f"{self.entry}: no such file (listed in [tool.archlint] models)")
        report = lint(str(target), **({"model": model} if model else {}))
        report.assert_clean(_project_fail_on(self.project_dir))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, (AssertionError, ArchlintItemError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.project_dir / "pyproject.toml", None, f"archlint: {self.entry}"


class ArchlintConfigFile(pytest.File):
    """The pyproject.toml whose ``[tool.archlint] models`` become items."""

    def collect(self):
        from archlint.config import ConfigError, load_config

        try:
            entries = load_config(path=self.path).models
        except ConfigError as exc:
            raise pytest.UsageError(f"archlint: {exc}") from None
        for entry in entries:
            yield ArchlintModelItem.from_parent(self, name=f"archlint[{entry}]", entry=entry,
                                                project_dir=self.path.parent)


class ArchlintItemError(Exception):
    pass


def _project_fail_on(project_dir: Path) -> str:
    from archlint.config import load_config

    return load_config(project_dir).fail_on


def _model_items(session: pytest.Session, config: pytest.Config) -> list[pytest.Item]:
    from archlint.config import find_pyproject

    pyproject = find_pyproject(Path(config.rootpath))
    if pyproject is None:
        return []
    return list(ArchlintConfigFile.from_parent(session, path=pyproject).collect())
