"""pre-commit in the tests: the hook as a ``repo: local`` hook with ``language: system`` that
copies the manifest's entry (the installed ``archlint`` script stands in for the environment
the manifest's ``language: python`` would build from the registry), a clean git environment,
and a runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / ".pre-commit-hooks.yaml"


def manifest_hook(hook_id: str) -> dict:
    import yaml

    (hook,) = [h for h in yaml.safe_load(MANIFEST.read_text()) if h["id"] == hook_id]
    return hook


def precommit_env(home: Path) -> dict[str, str]:
    """The environment pre-commit runs in: the installed archlint first on PATH, its own cache
    under ``home``, and the user's git hooks and settings kept out."""
    import pytest

    bin_dir = Path(sys.executable).parent
    if shutil.which("archlint", path=str(bin_dir)) is None:
        pytest.fail("the archlint console script is not installed (pip install -e .)")
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PRE_COMMIT_HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONWARNINGS": "ignore",
    }


def git_repo_with_hook(root: Path, env: dict[str, str], hook_id: str = "archlint") -> Path:
    """``root`` as a fresh git repository whose .pre-commit-config.yaml runs the manifest's hook,
    every file staged."""
    import yaml

    hook = manifest_hook(hook_id)
    local = {k: hook[k] for k in ("id", "name", "entry", "files", "require_serial")}
    config = {"repos": [{"repo": "local", "hooks": [{**local, "language": "system"}]}]}
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(root / ".git", ignore_errors=True)
    git(root, env, "init", "-q")
    git(root, env, "add", "-A")
    return root


def git(root: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, env=env,
                   check=True)


def run_pre_commit(*args: str, cwd: Path, env: dict[str, str],
                   timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
