"""SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.

One run; ``tool.driver.rules`` lists every registered rule with its docs. Paths are relative to
the working directory under ``%SRCROOT%``. A SARIF ``fix`` must carry concrete artifact edits,
which archlint does not make, so the fix text goes in the message and in ``properties.fix``.
A target that could not be analyzed becomes an error notification of the invocation.

Each result carries ``partialFingerprints["archlint/v1"]``: a hash of the rule, the file and the
node's qualname (not the line), so that code scanning follows a finding across edits that move
it. Each rule's ``help`` carries its full docs (what ``archlint rule <id>`` prints), so a viewer
needs no link. ``informationUri`` (the tool) and each rule's ``helpUri`` (the rule's file in the
repository) come from the installed project's Homepage URL, and are left out (both are optional
in SARIF 2.1.0) when it declares none: never a made-up address.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TextIO

from archlint.findings import Finding, Report
from archlint.graph import Location
from archlint.reporters import display_path

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVEL = {"error": "error", "warning": "warning", "info": "note"}
SRCROOT = "%SRCROOT%"


def render(report: Report, stream: TextIO, **_: Any) -> None:
    json.dump(report_to_sarif(report), stream, indent=2)
    stream.write("\n")


def report_to_sarif(report: Report) -> dict[str, Any]:
    rules = _rules()
    index = {r.id: i for i, r in enumerate(rules)}
    results = [
        result(f, m.target, index.get(f.rule)) for m in report.models for f in m.findings
    ]
    homepage = _homepage()
    driver: dict[str, Any] = {
        "name": "archlint",
        "version": _version(),
        **({"informationUri": homepage} if homepage else {}),
        "rules": [rule_descriptor(r, homepage) for r in rules],
    }
    failures = [m for m in report.models if m.error is not None]
    invocation: dict[str, Any] = {"executionSuccessful": not failures}
    if failures:
        invocation["toolExecutionNotifications"] = [
            {
                "level": "error",
                "message": {"text": f"{display_path(m.target) or m.target}: could not be analyzed: {m.error}"},
                **_locations_key(Location(m.target, None, m.model or m.target)),
            }
            for m in failures
        ]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "originalUriBaseIds": {SRCROOT: {"uri": Path(os.getcwd()).as_uri() + "/"}},
                "invocations": [invocation],
                "results": results,
            }
        ],
    }


def result(f: Finding, target: str, rule_index: int | None) -> dict[str, Any]:
    text = f.message + (f" Fix: {f.fix}" if f.fix else "")
    out: dict[str, Any] = {
        "ruleId": f.rule,
        "level": LEVEL[f.severity.value],
        "message": {"text": text},
    }
    if rule_index is not None:
        out["ruleIndex"] = rule_index
    location = f.location if f.location.file else Location(target, None, f.location.node)
    out.update(_locations_key(location))
    out["partialFingerprints"] = {"archlint/v1": fingerprint(f, location)}
    related = [_location(r, i) for i, r in enumerate(f.related) if r.file]
    if related:
        out["relatedLocations"] = related
    props: dict[str, Any] = {"code": f.code}
    if f.fix:
        props["fix"] = f.fix
    if f.sizes:
        props["sizes"] = f.sizes
    if f.confirmation:
        props["confirmation"] = f.confirmation
    out["properties"] = props
    return out


def fingerprint(f: Finding, location: Location) -> str:
    """Stable across edits that move the finding: rule, file and node, never the line."""
    file = display_path(location.file) or ""
    key = "\0".join((f.rule, file, location.node or ""))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _locations_key(loc: Location) -> dict[str, Any]:
    return {"locations": [_location(loc)]} if loc.file else {}


def _location(loc: Location, id_: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if id_ is not None:
        out["id"] = id_
    physical: dict[str, Any] = {"artifactLocation": artifact_location(loc.file)}
    if loc.line:
        physical["region"] = {"startLine": int(loc.line)}
    out["physicalLocation"] = physical
    if loc.node:
        out["logicalLocations"] = [{"name": loc.node.rsplit(".", 1)[-1], "fullyQualifiedName": loc.node}]
    return out


def artifact_location(file: str) -> dict[str, str]:
    """A relative URI under %SRCROOT% when the file is below the working directory."""
    absolute = Path(os.path.abspath(file))
    try:
        relative = absolute.relative_to(Path(os.getcwd()))
    except ValueError:  # outside the working directory ("../x.onnx", another drive)
        return {"uri": absolute.as_uri()}
    return {"uri": _uri_escape(relative.as_posix()), "uriBaseId": SRCROOT}


def _uri_escape(relative: str) -> str:
    from urllib.parse import quote

    return quote(relative, safe="/")


def rule_descriptor(rule: Any, homepage: str | None = None) -> dict[str, Any]:
    docs = rule.docs or rule.summary
    out: dict[str, Any] = {
        "id": rule.id,
        **({"helpUri": help_uri(rule, homepage)} if homepage else {}),
        "name": _camel(rule.id),
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": what_it_does(docs) or rule.summary},
        "help": {"text": docs, "markdown": docs},
        "defaultConfiguration": {"level": LEVEL[rule.severity.value], "enabled": rule.default_enabled},
        "properties": {"code": rule.code, "frontends": sorted(rule.frontends)},
    }
    return out


def help_uri(rule: Any, homepage: str) -> str:
    """The rule's docs: its file in the repository (built-ins) or the project page (plugins)."""
    module = getattr(getattr(rule, "check", None), "__module__", "") or ""
    if module.startswith("archlint_rules."):
        return f"{homepage.rstrip('/')}/blob/main/rules/{module.split('.', 1)[1]}.py"
    return homepage


def what_it_does(docs: str) -> str:
    """The text of the docs' "What it does" section, on one line."""
    m = re.search(r"#+\s*What it does\s*\n(.*?)(?:\n#+\s|\Z)", docs, flags=re.S)
    return " ".join(m.group(1).split()) if m else ""


def _camel(rule_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", rule_id) if part)


def _rules() -> list[Any]:
    from archlint.registry import all_rules

    return list(all_rules())


def _version() -> str:
    from archlint import __version__

    return __version__


def _homepage() -> str | None:
    """The project's Homepage URL from its installed metadata, if it declares one."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("archlint").get_all("Project-URL") or []
    except PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "home", "source", "repository"):
            return url.strip()
    return None
