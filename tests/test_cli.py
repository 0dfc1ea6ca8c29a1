"""The ``archlint`` command end to end: targets, options, formats, exit codes, subcommands.

Most tests call ``main()`` in-process on small ONNX nets built with onnx.helper (fast, no
torch); a few run ``python -m archlint`` in a subprocess where the process itself matters
(no torch import, timeouts, parallel workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archlint.cli import main
from archlint.deadline import TimedOut, deadline
from archlint.targets import expand_targets

REPO = Path(__file__).resolve().parents[1]


# --- small ONNX nets -------------------------------------------------------------------------


def _conv(name: str, x: str, out: str, cin: int, cout: int, k: int, s: int, p: int):
    w = numpy_helper.from_array(np.ones((cout, cin, k, k), np.float32), f"{name}_w")
    node = helper.make_node("Conv", [x, w.name], [out], name=name, kernel_shape=[k, k],
                            strides=[s, s], pads=[p, p, p, p])
    return node, w


def _save(path: Path, nodes, inits, shape, out_name: str) -> Path:
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def clean_net(path: Path) -> Path:
    """conv 3x3 same-size + relu: nothing to report at warning level."""
    conv, w = _conv("conv1", "x", "c", 3, 4, 3, 1, 1)
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu1")
    return _save(path, [conv, relu], [w], (1, 3, 16, 16), "y")


def mismatched_concat_net(path: Path) -> Path:
    """Two stride-2 branches of a 17x17 input give 9x9 and 8x8: the concat cannot run."""
    a, wa = _conv("branch_a", "x", "a", 3, 4, 3, 2, 1)
    b, wb = _conv("branch_b", "x", "b", 3, 4, 3, 2, 0)
    cat = helper.make_node("Concat", ["a", "b"], ["y"], name="merge", axis=1)
    return _save(path, [a, b, cat], [wa, wb], (1, 3, 17, 17), "y")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a clean net, a broken net, a plain script and an empty pyproject."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    models = tmp_path / "models"
    models.mkdir()
    clean_net(models / "clean.onnx")
    mismatched_concat_net(models / "bad.onnx")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "plot.py").write_text("print('no model here')\n")
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- exit codes and the text report ----------------------------------------------------------


def test_clean_model_exits_0_and_says_so(project, capsys):
    code, out, err = run(capsys, "models/clean.onnx")
    assert (code, err) == (0, "")
    last = out.splitlines()[-1]  # info findings (facts about the model) may be listed
    assert last == "All checks passed" or (last.startswith("Found ") and last.endswith(" info in 1 model"))
    code, out, _ = run(capsys, "models/clean.onnx", "--select", "AL1")
    assert (code, out) == (0, "All checks passed\n")


def test_findings_exit_1_with_location_and_fix(project, capsys):
    code, out, _ = run(capsys, "models/bad.onnx", "--select", "skip-connection-mismatch")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "models/bad.onnx"
    assert lines[1].startswith("  models/bad.onnx [merge]: AL101 error ")
    assert "9x9" in lines[1] and "8x8" in lines[1]
    assert lines[2].startswith("      fix: ")
    assert lines[-1] == "Found 1 error in 1 model"


def test_exit_zero_and_fail_on(project, capsys):
    assert run(capsys, "models/bad.onnx")[0] == 1
    assert run(capsys, "models/bad.onnx", "--exit-zero")[0] == 0
    # odd-size-stride2 is a warning: shown, but it fails only at --fail-on warning or below.
    code, out, _ = run(capsys, "models/bad.onnx", "--select", "AL104", "--fail-on", "error")
    assert code == 0 and "AL104 warning" in out
    assert run(capsys, "models/bad.onnx", "--select", "AL104", "--fail-on", "info")[0] == 1
    code, out, _ = run(capsys, "models/bad.onnx", "--select", "AL101,AL104", "--ignore", "AL101")
    assert code == 1 and "AL104" in out and "AL101" not in out


def test_config_is_read_and_the_cli_beats_it(project, capsys):
    (project / "pyproject.toml").write_text(
        "[tool.archlint]\nselect = ['AL104']\nfail-on = 'error'\n"
    )
    code, out, _ = run(capsys, "models/bad.onnx")
    assert code == 0 and "AL104 warning" in out and "AL101" not in out
    assert run(capsys, "models/bad.onnx", "--fail-on", "warning")[0] == 1
    (project / "pyproject.toml").write_text(
        "[tool.archlint]\nselect = ['AL101']\nignore = ['AL101']\n"
    )
    assert run(capsys, "models/bad.onnx")[0] == 0
    # A CLI --select starts the selection anew (ruff's layering): the config ignore is gone.
    assert run(capsys, "models/bad.onnx", "--select", "AL101")[0] == 1
    # An explicit --config wins over the nearest pyproject.toml.
    (project / "strict.toml").write_text("[tool.archlint]\nselect = ['AL104']\n")
    code, out, _ = run(capsys, "models/bad.onnx", "--config", "strict.toml")
    assert code == 1 and "AL104" in out and "AL101" not in out


def test_directory_lints_models_and_skips_plain_scripts(project, capsys):
    code, out, _ = run(capsys, ".", "--format", "json")
    assert code == 1
    data = json.loads(out)
    targets = sorted(Path(m["target"]).as_posix() for m in data["models"])
    assert targets == ["models/bad.onnx", "models/clean.onnx"]


def test_glob_expands_recursively(project, capsys):
    code, out, _ = run(capsys, "**/clean*.onnx", "--format", "json")
    assert code == 0
    assert [m["target"] for m in json.loads(out)["models"]] == ["models/clean.onnx"]


def test_one_failing_target_does_not_stop_the_others(project, capsys):
    (project / "models" / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    code, out, _ = run(capsys, "models/clean.onnx", "models/corrupt.onnx", "--format", "json")
    assert code == 2
    data = json.loads(out)
    by_target = {m["target"]: m for m in data["models"]}
    assert by_target["models/clean.onnx"]["error"] is None
    assert by_target["models/corrupt.onnx"]["error"]
    assert data["summary"]["failed_targets"] == 1


# --- user mistakes: one line on stderr, exit 2 -----------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models/clean.onnx", "--input-shape", "1,3,a"], "--input-shape '1,3,a'"),
        (["models/clean.onnx", "--select", "AL9999"], "unknown rule selector 'AL9999'"),
        (["models/clean.onnx", "--sizes-range", "9,3"], "--sizes-range '9,3'"),
        (["models/clean.onnx", "--timeout", "0"], "--timeout"),
        (["models/clean.onnx", "--config", "nope.toml"], "--config nope.toml"),
    ],
)
def test_usage_errors_are_one_line(project, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("archlint: error: ") and message in err
    assert err.count("\n") == 1


def test_bad_config_is_one_line(project, capsys):
    (project / "pyproject.toml").write_text("[tool.archlint]\nfail-on = 'sometimes'\n")
    code, _, err = run(capsys, "models/clean.onnx")
    assert code == 2 and err.startswith("archlint: error: ") and err.count("\n") == 1


def test_missing_file_and_empty_directory(project, capsys):
    (project / "empty").mkdir()
    code, out, _ = run(capsys, "missing.onnx", "empty")
    assert code == 2
    assert "missing.onnx\n  error: could not be analyzed: no such file or directory" in out
    assert "empty\n  error: could not be analyzed: no models found" in out


def test_bad_flag_exits_2(project, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2


# --- formats ---------------------------------------------------------------------------------


def test_json_has_every_target_including_failures(project, capsys):
    code, out, _ = run(capsys, "models/bad.onnx", "missing.onnx", "--format", "json",
                       "--select", "AL101")
    assert code == 2
    data = json.loads(out)
    assert data["version"] == 1
    bad, missing = data["models"]
    assert bad["frontend"] == "onnx" and bad["input_shapes"] == [[1, 3, 17, 17]]
    assert {n["name"] for n in bad["nodes"]} >= {"branch_a", "branch_b", "merge"}
    assert [f["code"] for f in bad["findings"]] == ["AL101"]
    assert missing["error"] == "no such file or directory" and missing["nodes"] == []
    assert data["summary"]["error"] == 1 and data["summary"]["targets"] == 2


def test_github_format(project, capsys):
    code, out, _ = run(capsys, "models/bad.onnx", "--format", "github", "--select", "AL101")
    assert code == 1
    assert out.startswith("::error file=models/bad.onnx,title=archlint AL101 skip-connection-mismatch::")
    assert out.count("\n") == 1 and " (fix: " in out


def test_sarif_format_is_json_with_results(project, capsys):
    code, out, _ = run(capsys, "models/bad.onnx", "--format", "sarif", "--select", "AL101")
    doc = json.loads(out)
    assert code == 1 and doc["version"] == "2.1.0"
    assert [r["ruleId"] for r in doc["runs"][0]["results"]] == ["skip-connection-mismatch"]


def test_show_layers_table(project, capsys):
    code, out, _ = run(capsys, "models/clean.onnx", "--show", "layers")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["conv1"][:3] == ["conv1", "conv", "1x4x16x16"]
    assert rows["conv1"][3:5] == ["3x3", "1x1"]  # RF size and stride of one 3x3 conv


def test_statistics(project, capsys):
    code, out, _ = run(capsys, "models/bad.onnx", "--statistics", "--select", "AL101,AL104")
    assert code == 1
    assert [line.split() for line in out.splitlines()] == [
        ["1", "AL101", "skip-connection-mismatch"],
        ["1", "AL104", "odd-size-stride2"],
    ]


# --- PyTorch .py models ----------------------------------------------------------------------

TORCH_MODEL = """\
import torch
import torch.nn as nn


class Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, kernel_size=3, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.conv(x))


example_input = torch.randn(1, 3, 16, 16)
"""


def test_python_model_file(project, capsys):
    (project / "models" / "upsampler.py").write_text(TORCH_MODEL)
    code, out, _ = run(capsys, "models/upsampler.py", "--select", "kernel-stride-checkerboard")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "models/upsampler.py (Upsampler)"
    up_line = 1 + next(i for i, t in enumerate(TORCH_MODEL.splitlines()) if "self.up =" in t)
    assert lines[1].startswith(f"  models/upsampler.py:{up_line}: AL102 warning nn.ConvTranspose2d")
    assert lines[2].startswith("      fix: ")


def test_explicit_python_file_without_a_model_gets_the_frontends_reason(project, capsys):
    (project / "scripts" / "train.py").write_text("import torch\nlr = 0.1\n")
    code, out, _ = run(capsys, "scripts/train.py")
    assert code == 2
    assert "error: could not be analyzed: no model found in" in out
    # The pre-commit hook's flag: plain scripts are skipped silently.
    assert run(capsys, "--skip-non-models", "scripts/plot.py") == (0, "", "")


# --- subcommands -----------------------------------------------------------------------------


def test_rules_lists_every_rule(capsys):
    from archlint.registry import all_rules

    code, out, _ = run(capsys, "rules")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["code", "id", "severity", "default", "summary"]
    assert len(lines) == 1 + len(all_rules())
    assert any(line.split()[:4] == ["AL001", "shape-propagation-error", "error", "on"] for line in lines)


def test_rule_prints_docs_raw_on_a_pipe(capsys):
    code, out, _ = run(capsys, "rule", "AL001")
    assert code == 0
    assert out.startswith("# shape-propagation-error (AL001)")
    assert "## What it does" in out and "\x1b[" not in out
    assert run(capsys, "rule", "shape-propagation-error")[1] == out


def test_unknown_rule(capsys):
    code, _, err = run(capsys, "rule", "no-such-rule")
    assert code == 2 and err == "archlint: error: unknown rule 'no-such-rule' (see 'archlint rules')\n"


def test_a_folder_named_rules_is_linted_with_a_path_prefix(project, capsys):
    (project / "rules").mkdir()
    clean_net(project / "rules" / "net.onnx")
    assert run(capsys, "rules")[1].startswith("code")  # the subcommand wins
    code, out, _ = run(capsys, "./rules", "--format", "json")
    assert code == 0 and [m["target"] for m in json.loads(out)["models"]] == ["rules/net.onnx"]


def test_sizes_subcommand(project, capsys):
    code, out, _ = run(capsys, "sizes", "models/clean.onnx", "missing.onnx")
    assert code == 2
    first, second = out.splitlines()
    assert first.startswith("models/clean.onnx: ")
    assert second == "missing.onnx: error: no such file or directory"


# --- target expansion ------------------------------------------------------------------------


def test_expansion_skips_hidden_venv_and_cache_dirs(tmp_path):
    model = "import torch.nn as nn\nclass Net(nn.Module):\n    pass\n"
    for folder in ("pkg", ".hidden", "__pycache__", "venv", "lib/site-packages", "myenv"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "m.py").write_text(model)
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")
    (tmp_path / "pkg" / "util.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg" / "net.onnx").write_bytes(b"")
    found = expand_targets([str(tmp_path)])
    assert [p.relative_to(tmp_path).as_posix() for p in found.files] == ["pkg/m.py", "pkg/net.onnx"]
    assert found.problems == []


def test_expansion_survives_a_symlink_loop(tmp_path):
    (tmp_path / "a").mkdir()
    clean_net(tmp_path / "a" / "net.onnx")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "self").symlink_to(tmp_path / "self")
    found = expand_targets([str(tmp_path / "a"), str(tmp_path / "self")])
    assert [p.name for p in found.files] == ["net.onnx"]
    assert len(found.problems) == 1 and found.problems[0].path.endswith("self")


def test_expansion_reports_an_unreadable_folder(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    clean_net(tmp_path / "net.onnx")
    real_scandir = os.scandir

    def scandir(path):  # chmod 0 means nothing to root, so refuse the folder here
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = expand_targets([str(tmp_path)])
    assert [p.name for p in found.files] == ["net.onnx"]
    assert [(Path(p.path).name, p.reason) for p in found.problems] == [("locked", "permission denied")]


def test_skip_non_models_drops_plain_python_silently(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("x = 1\n")
    readme = tmp_path / "README.md"
    readme.write_text("# hi\n")
    assert expand_targets([str(plain), str(readme)], skip_non_models=True).files == []
    found = expand_targets([str(plain), str(readme)])
    assert found.files == [plain]  # an explicit .py is linted: the frontend says why it has no model
    assert [p.reason for p in found.problems] == ["not a .py or .onnx file"]


# --- processes: no torch, timeouts, parallel workers -----------------------------------------


def _archlint(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archlint", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_help_rules_and_onnx_never_import_torch(project):
    probe = textwrap.dedent("""
        import sys
        from archlint.cli import main
        for argv in (["rules"], ["rule", "AL001"], ["models/clean.onnx"], ["scripts", "--no-progress"],
                     ["--skip-non-models", "scripts/plot.py", "models/clean.onnx"]):
            main(argv)
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = sorted(m for m in ("torch", "onnxruntime") if m in sys.modules)
        print("HEAVY", heavy, file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=project, capture_output=True, text=True,
                          timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_time_limit_interrupts_a_busy_loop():
    with pytest.raises(TimedOut, match=r"timed out after 0\.2s"):
        with deadline(0.2):
            while True:
                pass
    with deadline(5):  # a quick body is not interrupted, and the alarm is cancelled
        total = sum(range(1000))
    assert total == 499500


def test_timeout_at_import_fails_that_target_only(project):
    (project / "models" / "hang.py").write_text(
        "import torch.nn as nn\nwhile True:\n    pass\nclass Net(nn.Module):\n    pass\n"
    )
    proc = _archlint("models/hang.py", "models/clean.onnx", "--timeout", "3", "--format", "json",
                     cwd=project)
    assert proc.returncode == 2, proc.stderr
    by_target = {m["target"]: m for m in json.loads(proc.stdout)["models"]}
    assert by_target["models/hang.py"]["error"] == "timed out after 3s importing and capturing hang.py"
    assert by_target["models/clean.onnx"]["error"] is None


def test_parallel_jobs_match_sequential(project):
    for i in range(3):
        clean_net(project / "models" / f"extra{i}.onnx")
    seq = _archlint("models", "--format", "json", cwd=project)
    par = _archlint("models", "--format", "json", "-j", "2", cwd=project)
    assert seq.returncode == par.returncode == 1, par.stderr
    assert json.loads(par.stdout) == json.loads(seq.stdout)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal(project):
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "archlint", "models", "--format", "json"],
                          cwd=project, stdout=subprocess.PIPE, stderr=secondary, timeout=120)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert b"linting" in shown and b"/2" in shown  # the bar counts the two targets
    assert json.loads(proc.stdout)["summary"]["targets"] == 2  # stdout stays plain JSON
    piped = _archlint("models", "--format", "json", cwd=project)
    assert piped.stderr == ""
