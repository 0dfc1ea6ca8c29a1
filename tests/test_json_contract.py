"""The versioned JSON report (DESIGN.md) holds on every bundled model: fixtures, zoo, example.

One CLI run over all of them, validated against a schema written from the contract, so that a
field a reporter forgets or mistypes on any model fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["fixtures/models", "fixtures/zoo", "fixtures/regressions", "examples"]

LOCATION = {
    "type": "object",
    "required": ["file", "line", "node"],
    "properties": {
        "file": {"type": ["string", "null"]},
        "line": {"type": ["integer", "null"], "minimum": 1},
        "node": {"type": "string", "minLength": 1},
    },
}
NUMBER = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": r"^-?\d+/\d+$"}]}
RF_AXIS = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "required": ["size", "stride", "padding", "global"],
            "properties": {"size": NUMBER, "stride": NUMBER, "padding": NUMBER,
                           "global": {"const": False}},
        },
        {  # every value reads the whole input along this axis
            "type": "object",
            "required": ["size", "stride", "padding", "global"],
            "properties": {"size": {"type": "null"}, "stride": {"type": "null"},
                           "padding": {"type": "null"}, "global": {"const": True}},
        },
    ]
}
PROGRESSIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["start", "stop", "step"],
        "properties": {
            "start": {"type": "integer", "minimum": 1},
            "stop": {"type": ["integer", "null"]},
            "step": {"type": "integer", "minimum": 1},
        },
    },
}
SCHEMA = {
    "type": "object",
    "required": ["version", "models", "summary"],
    "properties": {
        "version": {"const": 1},
        "summary": {"type": "object"},
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["target", "frontend", "input_shapes", "nodes", "findings",
                             "admissible_sizes", "error"],
                "properties": {
                    "target": {"type": "string"},
                    "frontend": {"enum": ["torch", "onnx"]},
                    "input_shapes": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    },
                    "nodes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "op", "shape", "rf", "location"],
                            "properties": {
                                "name": {"type": "string"},
                                "op": {"type": "string"},
                                "shape": {"type": ["array", "null"], "items": {"type": "integer"}},
                                "rf": {"type": ["array", "null"], "items": RF_AXIS},
                                "location": LOCATION,
                            },
                        },
                    },
                    "findings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["rule", "code", "severity", "message", "fix", "location"],
                            "properties": {
                                "rule": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                                "code": {"type": "string", "pattern": "^AL[0-9]{3}$"},
                                "severity": {"enum": ["error", "warning", "info"]},
                                "message": {"type": "string", "minLength": 1},
                                "fix": {"type": ["string", "null"]},
                                "location": LOCATION,
                            },
                        },
                    },
                    "admissible_sizes": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["range", "square", "undecided", "exact"],
                                "properties": {
                                    "range": {"type": "array", "minItems": 2, "maxItems": 2},
                                    "square": PROGRESSIONS,
                                    "exact": {"type": "boolean"},
                                    "undecided": {
                                        "type": "object",
                                        "required": ["square"],
                                        "additionalProperties": PROGRESSIONS,
                                    },
                                },
                                "additionalProperties": PROGRESSIONS,
                            },
                        ]
                    },
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def payload() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "archlint", *TARGETS, "--format", "json", "--exit-zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 2), proc.stderr[-2000:]  # 2: the fixtures that cannot build
    return json.loads(proc.stdout)


def test_every_model_entry_follows_the_contract(payload):
    jsonschema.validate(payload, SCHEMA)


def test_every_bundled_model_file_has_an_entry(payload):
    linted = {Path(m["target"]).resolve() for m in payload["models"]}
    for folder in TARGETS:
        for path in (ROOT / folder).glob("*.py"):
            if path.name == "__init__.py":
                continue
            assert path.resolve() in linted, f"{path} has no entry in the JSON report"


def test_a_model_that_could_not_be_analyzed_says_why_in_one_line(payload):
    failed = [m for m in payload["models"] if m["error"] is not None]
    for m in failed:
        assert "\n" not in m["error"] and m["error"].strip(), m
    built = [m for m in payload["models"] if m["error"] is None]
    assert all(m["nodes"] for m in built), "a model that was built must list its nodes"


def test_summary_counts_match_the_entries(payload):
    findings = [f for m in payload["models"] for f in m["findings"]]
    summary = payload["summary"]
    assert summary["findings"] == len(findings)
    for level in ("error", "warning", "info"):
        assert summary[level] == sum(f["severity"] == level for f in findings)
