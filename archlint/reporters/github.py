"""GitHub Actions workflow commands: one annotation per finding.

    ::error file=models/unet.py,line=42,title=archlint AL101 skip-connection-mismatch::message

Escaping follows the Actions toolkit: ``%``, CR and LF in the message; additionally ``:`` and
``,`` in property values.
"""

from __future__ import annotations

from typing import Any, TextIO

from archlint.findings import Finding, Report
from archlint.reporters import display_path

COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def render(report: Report, stream: TextIO, **_: Any) -> None:
    for model in report.models:
        if model.error is not None:
            props = {"file": display_path(model.target) or model.target, "title": "archlint"}
            stream.write(_command("error", props, f"could not be analyzed: {model.error}"))
        for f in model.findings:
            stream.write(finding_command(f, model.target))


def finding_command(f: Finding, target: str) -> str:
    props: dict[str, str] = {}
    file = display_path(f.location.file) or display_path(target)
    if file:
        props["file"] = file
    if f.location.line:
        props["line"] = str(f.location.line)
    props["title"] = f"archlint {f.code} {f.rule}"
    message = f.message + (f" (fix: {f.fix})" if f.fix else "")
    return _command(COMMAND[f.severity.value], props, message)


def _command(name: str, props: dict[str, str], message: str) -> str:
    joined = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
    return f"::{name} {joined}::{escape_data(message)}\n"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
