"""``archlint --fix``: every rule's fix, applied to its bad fixture, removes the finding, keeps the
model building and running, touches nothing but the edited call, and is idempotent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archlint.api import lint
from archlint.cli import main
from archlint.fixes.model import Applicability

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures" / "models"

#: Rule id -> whether its fix is safe. Every rule whose bad fixture carries a fix is here
#: (test_every_fix_is_tested keeps it that way).
FIXES = {
    "conv-bias-before-norm": True,
    "avgpool-count-include-pad": True,
    "dilation-padding-mismatch": False,
    "even-kernel-same-padding": False,
    "kernel-smaller-than-stride": False,
    "kernel-stride-checkerboard": False,
    "pool-drops-border": False,
    "same-padding-stride": False,
    "skip-connection-mismatch": False,
    "transposed-conv-output-ambiguity": False,
}
#: Lines whose fix the fixture makes impossible on purpose, with the reason expected.
LEFT_ALONE = {
    # conv_block(in, out, stride) passes its stride through: padding depends on it.
    "same-padding-stride": {12: "computed from stride, which is an expression here"},
}

#: A worker process (torch imported once) that, for each path on stdin, builds every nn.Module
#: class the file defines and runs the file's example_input through it on CPU.
RUN_MODELS = r"""
import json, runpy, sys, traceback
import torch
from torch import nn

for path in sys.stdin:
    try:
        ns = runpy.run_path(path.strip(), run_name="fixture")
        out = {}
        for name, obj in ns.items():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == "fixture":
                model = obj().eval()
                with torch.no_grad():
                    y = model(ns["example_input"])
                out[name] = {"output": list(y.shape),
                             "params": {k: list(v.shape) for k, v in model.state_dict().items()}}
        print(json.dumps({"models": out}), flush=True)
    except Exception:
        print(json.dumps({"error": traceback.format_exc()}), flush=True)
"""


@pytest.fixture(scope="module")
def run_models():
    worker = subprocess.Popen([sys.executable, "-c", RUN_MODELS], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})

    def run(path: Path) -> dict:
        worker.stdin.write(f"{path}\n")
        worker.stdin.flush()
        return json.loads(worker.stdout.readline())

    yield run
    worker.stdin.close()
    worker.wait(timeout=60)


def lint_json(capsys, *args: str) -> tuple[int, dict, str]:
    capsys.readouterr()
    code = main([*args, "--format", "json", "--no-progress"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def findings(report: dict, rule: str) -> list[dict]:
    return [f for m in report["models"] for f in m["findings"] if f["rule"] == rule]


def test_every_fix_is_tested():
    declared = set()
    for fixture in FIXTURES.glob("*_bad.py"):
        for f in lint(str(fixture)).findings:
            if f.autofix is not None:
                declared.add(f.rule)
                assert (f.autofix.applicability is Applicability.SAFE) == FIXES[f.rule], f.rule
    assert declared == set(FIXES)


@pytest.mark.parametrize("rule", sorted(FIXES))
def test_fix_on_bad_fixture(rule, tmp_path, capsys, run_models):
    original = FIXTURES / f"{rule.replace('-', '_')}_bad.py"
    path = tmp_path / original.name
    shutil.copy(original, path)
    before_text = path.read_text()
    _, before, _ = lint_json(capsys, str(path))
    fixable = {f["location"]["line"] for f in findings(before, rule) if "autofix" in f}
    # Finding line -> the line of the call its fix edits (another layer's, for a merge).
    edits = {f["location"]["line"]: e["line"] for f in findings(before, rule) if "autofix" in f
             for e in f["autofix"]["edits"]}
    assert fixable, "the fixture carries no fix"
    left_alone = LEFT_ALONE.get(rule, {})
    unsafe = [] if FIXES[rule] else ["--unsafe-fixes"]

    if not FIXES[rule]:  # unsafe: --fix alone leaves the file as it is and lists the fix
        _, report, summary = lint_json(capsys, str(path), "--fix")
        assert path.read_text() == before_text
        assert f"{len(fixable)} more with --unsafe-fixes" in summary

    _, after, summary = lint_json(capsys, str(path), "--fix", *unsafe)
    fixed = fixable - set(left_alone)
    assert f"Fixed {len(fixed)} finding" in summary

    # The finding is gone; the ones left alone say why.
    remaining = {f["location"]["line"]: f for f in findings(after, rule)}
    assert not fixed & set(remaining), remaining
    for line, reason in left_alone.items():
        assert reason in remaining[line]["fix_note"], remaining[line]

    # Only the edited calls' lines changed, and their trailing comments stayed.
    old_lines, new_lines = before_text.splitlines(), path.read_text().splitlines()
    assert len(old_lines) == len(new_lines)
    changed = {i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b}
    assert changed == {edits[line] for line in fixed}
    for line in changed:
        assert old_lines[line - 1].partition("  #")[2] == new_lines[line - 1].partition("  #")[2]

    # The model still builds and runs at the example size (really, on CPU, in a fresh process).
    ran = run_models(path)
    if left_alone:
        # The call it could not fix still stops the build there, and nowhere else.
        assert f'{path.name}", line {min(left_alone)}' in ran["error"], ran
    else:
        assert "error" not in ran, ran["error"]
        models = ran["models"]
        assert models
        if FIXES[rule]:  # safe: same output shapes, and no parameter that stays changes shape
            baseline = run_models(original)["models"]
            for name, facts in models.items():
                assert facts["output"] == baseline[name]["output"]
                for key, shape in facts["params"].items():
                    assert baseline[name]["params"][key] == shape

    # A second --fix changes nothing.
    text = path.read_text()
    _, again, summary = lint_json(capsys, str(path), "--fix", *unsafe)
    assert path.read_text() == text
    assert "Fixed 0 findings" in summary


def test_diff_applies_with_git_apply(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    fixed = tmp_path / "fixed"
    names = ["kernel_stride_checkerboard_bad.py", "conv_bias_before_norm_bad.py"]
    for folder in (repo, fixed):
        (folder / "models").mkdir(parents=True)
        for name in names:
            shutil.copy(FIXTURES / name, folder / "models" / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "models"], cwd=repo, check=True)

    monkeypatch.chdir(repo)
    capsys.readouterr()
    code = main(["models", "--diff", "--unsafe-fixes", "--no-progress"])
    patch, summary = capsys.readouterr()
    assert code == 1  # there is something to fix
    assert "Would fix 4 findings in 2 files" in summary
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                            text=True, check=True)
    assert status.stdout == ""  # --diff wrote nothing
    (tmp_path / "fix.patch").write_text(patch)
    subprocess.run(["git", "apply", "--check", str(tmp_path / "fix.patch")], cwd=repo, check=True)
    subprocess.run(["git", "apply", str(tmp_path / "fix.patch")], cwd=repo, check=True)

    # The patch is what --fix writes.
    monkeypatch.chdir(fixed)
    main(["models", "--fix", "--unsafe-fixes", "--no-progress"])
    for name in names:
        assert (repo / "models" / name).read_text() == (fixed / "models" / name).read_text()
    capsys.readouterr()
    assert main(["models", "--diff", "--unsafe-fixes", "--no-progress"]) == 0
    assert capsys.readouterr().out == ""


UNEDITABLE = '''\
import torch
from torch import nn
from monai.networks.blocks import Convolution

example_input = torch.zeros(1, 3, 32, 32)


def dilated(channels, padding):
    return nn.Conv2d(channels, channels, 3, padding=padding, dilation=2)


class Uneditable(nn.Module):
    def __init__(self, options=None):
        super().__init__()
        options = options or {"padding": 1}
        kernel = 3
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.helper = dilated(16, padding=1)  # a helper's call, not the conv's
        self.head1 = nn.Conv2d(16, 16, 3, padding=1)
        self.spread = nn.Conv2d(16, 16, 3, dilation=2, **options)
        self.head2 = nn.Conv2d(16, 16, 3, padding=1)
        self.wide = nn.Conv2d(16, 16, kernel, padding=1, dilation=2)
        self.library = Convolution(spatial_dims=2, in_channels=16, out_channels=16,
                                   norm="batch", bias=True)

    def forward(self, x):
        x = self.head1(self.helper(self.stem(x)))
        x = self.head2(self.spread(x))
        return self.library(self.wide(x))
'''


def test_calls_that_cannot_be_edited_are_left_alone_with_a_reason(tmp_path, capsys):
    pytest.importorskip("monai")
    path = tmp_path / "uneditable.py"
    path.write_text(UNEDITABLE)
    _, report, summary = lint_json(capsys, str(path), "--fix", "--unsafe-fixes",
                                   "--select", "dilation-padding-mismatch,conv-bias-before-norm")
    assert path.read_text() == UNEDITABLE
    assert "Fixed 0 findings" in summary
    notes = {(f["rule"], f["location"]["line"]): f.get("fix_note", "")
             for m in report["models"] for f in m["findings"]}
    # A layer built by a helper: its call site is not the layer's constructor call.
    assert "builds the Conv2d inside dilated(...)" in notes["dilation-padding-mismatch", 18]
    # **kwargs may carry the same argument.
    assert "passes **options" in notes["dilation-padding-mismatch", 20]
    # The padding is computed from the kernel size, which is a variable at the call.
    assert "computed from kernel_size, which is an expression here (kernel)" in notes[
        "dilation-padding-mismatch", 22]
    # A layer a library builds inside its own code.
    (library,) = [n for (rule, _), n in notes.items() if rule == "conv-bias-before-norm"]
    assert "installed library" in library


def test_a_fix_that_does_not_hold_is_rolled_back(tmp_path):
    from archlint.config import Options
    from archlint.fixes.engine import fix_report
    from archlint.fixes.model import Fix

    path = tmp_path / "model.py"
    shutil.copy(FIXTURES / "conv_bias_before_norm_bad.py", path)
    text = path.read_text()
    report = lint(str(path))
    (finding,) = report.findings
    edit = finding.autofix.edits[0]

    # An edit that leaves the finding in place.
    finding.autofix = Fix((type(edit)(edit.location, edit.callee, (("bias", True),)),),
                          Applicability.SAFE)
    after, run = fix_report(report, Options(), unsafe=False, write=True)
    assert path.read_text() == text and not run.fixed
    (still,) = after.findings
    assert still.fix_note == "rolled back: the edit did not remove the finding"

    # Edits that break the build: a constructor that raises, a 99x99 kernel on a 64x64 map.
    for arguments, note in [
        ((("bias", False), ("padding_mode", "bogus")), "rolled back: the model no longer builds"),
        ((("bias", False), ("kernel_size", 99)), "rolled back: it causes AL204 at line 12"),
    ]:
        report = lint(str(path))
        (finding,) = report.findings
        finding.autofix = Fix((type(edit)(edit.location, edit.callee, arguments),),
                              Applicability.UNSAFE)
        after, run = fix_report(report, Options(), unsafe=True, write=True)
        assert path.read_text() == text and not run.fixed
        (still,) = after.findings
        assert still.fix_note.startswith(note), still.fix_note


def test_text_report_lists_fixes_and_what_fix_did(tmp_path, capsys):
    path = tmp_path / "model.py"
    shutil.copy(FIXTURES / "kernel_stride_checkerboard_bad.py", path)
    capsys.readouterr()
    assert main([str(path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert ("autofix: kernel_size=4, padding=2, output_padding=1 "
            "(unsafe: archlint --fix --unsafe-fixes)") in out
    assert main([str(path), "--fix", "--unsafe-fixes", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"fixed {path}:14 [kernel-stride-checkerboard] kernel_size=4, padding=2, " \
           "output_padding=1" in out
    assert "Fixed 3 findings in 1 file." in out and "All checks passed" in out


def test_sizes_rejects_fix(capsys):
    assert main(["sizes", str(FIXTURES / "conv_bias_before_norm_bad.py"), "--fix"]) == 2
    assert "--fix and --diff apply to 'archlint PATH'" in capsys.readouterr().err


def test_fixed_file_is_relinted_under_its_own_project_config(tmp_path, capsys, monkeypatch):
    """The project's [tool.archlint] gives the model 3 channels; the working directory's gives
    5, under which the conv cannot run. The re-lint after --fix must use the project's config
    (as the first lint did): under the working directory's, the model no longer builds and the
    safe fix would be rolled back."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.archlint]\ninput-shape = [1, 3, 16, 16]\n")
    model = project / "block.py"
    model.write_text(
        "from torch import nn\n\n\n"
        "class Block(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.bn = nn.BatchNorm2d(8)\n\n"
        "    def forward(self, x):\n"
        "        return self.bn(self.conv(x))\n")
    (tmp_path / "pyproject.toml").write_text("[tool.archlint]\ninput-shape = [1, 5, 16, 16]\n")
    monkeypatch.chdir(tmp_path)
    main([str(model), "--fix", "--no-progress"])
    out = capsys.readouterr().out
    assert "nn.Conv2d(3, 8, 3, padding=1, bias=False)" in model.read_text(), out
    assert "rolled back" not in out and "no longer builds" not in out, out
