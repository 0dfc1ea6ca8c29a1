"""Every fixture in fixtures/models/ carries its own expectations, flake8-bugbear style.

A line ending in ``# expect: <rule-id>[, <rule-id>...]`` must get exactly those findings at
exactly that line; nothing else above info may fire anywhere in the file (bad and good fixtures
alike). Adding a case means adding a file, not a test. Every registered rule must have a
``<id with underscores>_bad.py`` and ``_good.py`` fixture and docs in the five ruff sections.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from archlint.config import Options
from archlint.findings import Severity
from archlint.registry import all_rules
from archlint.rule import DOC_SECTIONS

pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
EXPECT = re.compile(r"#\s*expect:\s*([A-Za-z0-9_\-, ]+?)\s*$")
#: Every rule, including those off by default: a fixture's marks are the whole truth.
EVERY_RULE = Options(select=("ALL",))


def expected_findings(path: Path) -> Counter:
    """(line, rule id) -> 1 for every ``# expect:`` mark in the file."""
    marks: Counter = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            for rule_id in match.group(1).split(","):
                if rule_id.strip():
                    marks[(number, rule_id.strip())] += 1
    return marks


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.py"))


def _reads_source_only(rule_ids: set[str]) -> bool:
    by_id = {r.id: r for r in all_rules()}
    return bool(rule_ids) and all(by_id[r].reads_source for r in rule_ids if r in by_id)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.name)
def test_fixture_gets_exactly_its_expected_findings(path: Path) -> None:
    from archlint.api import lint

    expected = expected_findings(path)
    if path.stem.endswith("_good"):
        assert not expected, f"{path.name}: a good fixture carries no '# expect:' marks"
    report = lint(path, config=EVERY_RULE)
    assert report.models, f"{path.name}: no model found"

    expected_rules = {rule for _, rule in expected}
    found: Counter = Counter()
    for model in report.models:
        internal = [n for n in model.notes if n.startswith("internal error")]
        assert not internal, f"{path.name}: {internal}"
        if model.error is not None:
            # only a model that is broken on purpose, for a rule that reads the source
            assert _reads_source_only(expected_rules), f"{path.name}: {model.model}: {model.error}"
        per_model: Counter = Counter()
        for f in model.findings:
            key = (f.location.line, f.rule)
            if f.severity.rank <= Severity.INFO.rank and key not in expected:
                continue
            assert f.location.file is not None and Path(f.location.file).resolve() == path.resolve(), (
                f"{path.name}: {f.rule} located outside the fixture: {f.location}"
            )
            per_model[key] += 1
        duplicated = [k for k, n in per_model.items() if n > 1]
        assert not duplicated, f"{path.name}: {model.model}: reported more than once: {duplicated}"
        found.update(per_model)

    found_keys, expected_keys = set(found), set(expected)
    missing = sorted(expected_keys - found_keys)
    unexpected = sorted(found_keys - expected_keys)
    details = [
        f"  line {f.location.line} [{f.rule}] {f.severity}: {f.message}"
        for m in report.models
        for f in m.findings
        if (f.location.line, f.rule) in set(unexpected)
    ]
    assert not missing and not unexpected, (
        f"{path.name}: missing {missing}, unexpected {unexpected}\n" + "\n".join(details)
    )


def test_every_fixture_mark_names_a_registered_rule() -> None:
    known = {r.id for r in all_rules()}
    for path in fixture_files():
        unknown = {rule for _, rule in expected_findings(path)} - known
        assert not unknown, f"{path.name} expects unregistered rule(s) {sorted(unknown)}"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_rule_has_a_bad_and_a_good_fixture(rule) -> None:
    stem = rule.id.replace("-", "_")
    bad, good = FIXTURES / f"{stem}_bad.py", FIXTURES / f"{stem}_good.py"
    assert bad.is_file() and good.is_file(), f"{rule.id}: needs {bad.name} and {good.name}"
    marks = {rule_id for _, rule_id in expected_findings(bad)}
    assert rule.id in marks, f"{bad.name} has no '# expect: {rule.id}' line"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_rule_docs_have_the_five_sections(rule) -> None:
    headings = re.findall(r"^## (.+?)\s*$", rule.docs, flags=re.MULTILINE)
    assert headings == list(DOC_SECTIONS), f"{rule.id}: sections {headings}"
    for section, body in zip(DOC_SECTIONS, re.split(r"^## .+$", rule.docs, flags=re.MULTILINE)[1:]):
        assert body.strip(), f"{rule.id}: section {section!r} is empty"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_archlint_rule_prints_the_docs(rule, capsys) -> None:
    from archlint.cli import main

    assert main(["rule", rule.id]) == 0
    out = capsys.readouterr().out
    assert f"# {rule.id} ({rule.code})" in out
    for section in DOC_SECTIONS:
        assert f"## {section}" in out
    assert rule.summary in out
