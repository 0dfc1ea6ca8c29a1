"""The ``archlint-fix`` pre-commit hook: like ruff's ``--fix`` hook, a run that changes a file
fails (pre-commit sees the change), and the next run passes.

Driven as ``repo: local`` with ``language: system`` and the manifest's entry, as in
test_precommit.py, so no environment is built from the registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")  # pre-commit depends on PyYAML

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / ".pre-commit-hooks.yaml"
FIXTURE = REPO / "fixtures" / "models" / "conv_bias_before_norm_bad.py"


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_fix_hook_fails_once_then_passes(tmp_path):
    bin_dir = Path(sys.executable).parent
    if shutil.which("archlint", path=str(bin_dir)) is None:
        pytest.fail("the archlint console script is not installed (pip install -e .)")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    (hook,) = [h for h in yaml.safe_load(MANIFEST.read_text()) if h["id"] == "archlint-fix"]
    assert hook["entry"] == "archlint --skip-non-models --fix"
    local = {k: hook[k] for k in ("id", "name", "entry", "files", "require_serial")}
    root = tmp_path / "user-repo"
    (root / "models").mkdir(parents=True)
    config = {"repos": [{"repo": "local", "hooks": [{**local, "language": "system"}]}]}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(FIXTURE, root / "models" / "block.py")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run([*git, "init", "-q"], root, env)
    _run([*git, "add", "-A"], root, env)

    pre_commit = [sys.executable, "-m", "pre_commit", "run", "--files", "models/block.py"]
    first = _run(pre_commit, root, env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "files were modified by this hook" in first.stdout
    assert "fixed models/block.py:12 [conv-bias-before-norm] bias=False" in first.stdout
    assert "bias=False)  # expect: conv-bias-before-norm" in (root / "models" / "block.py").read_text()

    _run([*git, "add", "-A"], root, env)
    second = _run(pre_commit, root, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout
