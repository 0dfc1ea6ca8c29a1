"""The ``archlint-fix`` pre-commit hook: like ruff's ``--fix`` hook, a run that changes a file
fails (pre-commit sees the change), and the next run passes.

Driven as ``repo: local`` with ``language: system`` and the manifest's entry, as in
test_precommit.py, so no environment is built from the registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("yaml")  # pre-commit depends on PyYAML

from hooks import git, git_repo_with_hook, manifest_hook, precommit_env, run_pre_commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "fixtures" / "models" / "conv_bias_before_norm_bad.py"


def test_fix_hook_fails_once_then_passes(tmp_path):
    env = precommit_env(tmp_path / "pre-commit-home")
    assert manifest_hook("archlint-fix")["entry"] == "archlint --skip-non-models --fix"
    root = tmp_path / "user-repo"
    (root / "models").mkdir(parents=True)
    shutil.copy(FIXTURE, root / "models" / "block.py")
    git_repo_with_hook(root, env, "archlint-fix")

    args = ("run", "--files", "models/block.py")
    first = run_pre_commit(*args, cwd=root, env=env, timeout=180)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "files were modified by this hook" in first.stdout
    assert "fixed models/block.py:12 [conv-bias-before-norm] bias=False" in first.stdout
    assert "bias=False)  # expect: conv-bias-before-norm" in (root / "models" / "block.py").read_text()

    git(root, env, "add", "-A")
    second = run_pre_commit(*args, cwd=root, env=env, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout
