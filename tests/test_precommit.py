"""The pre-commit hook: the manifest validates, and its entry works inside pre-commit.

The hook is driven as a ``repo: local`` hook with ``language: system`` that copies the manifest's
``entry``, ``files`` and ``require_serial``. The manifest's own ``language: python`` would make
pre-commit build a virtualenv and pip-install archlint (and torch) from the registry, which a
test must not do; the installed ``archlint`` script stands in for that environment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

yaml = pytest.importorskip("yaml")  # pre-commit depends on PyYAML

from hooks import MANIFEST, REPO, git_repo_with_hook, manifest_hook, precommit_env, run_pre_commit  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return precommit_env(tmp_path_factory.mktemp("pre-commit-home"))


def test_manifest_is_valid(env):
    result = run_pre_commit("validate-manifest", str(MANIFEST), cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_declares_the_hook():
    hook = manifest_hook("archlint")
    assert hook["id"] == "archlint"
    assert hook["entry"] == "archlint --skip-non-models"
    assert hook["language"] == "python"
    assert hook["require_serial"] is True
    assert "types" not in hook  # identify has no tag for .onnx
    import re

    matches = re.compile(hook["files"]).search
    assert matches("models/unet.py") and matches("export/net.onnx")
    assert not matches("README.md") and not matches("net.onnx.bak")


def _onnx_net(path: Path, mismatched: bool) -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    a = helper.make_node("Conv", ["x", "w"], ["a"], name="branch_a", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1])
    b = helper.make_node("Conv", ["x", "w"], ["b"], name="branch_b", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[0, 0, 0, 0] if mismatched else [1, 1, 1, 1])
    cat = helper.make_node("Concat", ["a", "b"], ["y"], name="merge", axis=1)
    graph = helper.make_graph(
        [a, b, cat], path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 17, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    root = tmp_path_factory.mktemp("user-repo")
    (root / "pyproject.toml").write_text("[tool.archlint]\nselect = ['skip-connection-mismatch']\n")
    (root / "plot.py").write_text("import matplotlib\nprint('not a model')\n")
    (root / "README.md").write_text("# models\n")
    _onnx_net(root / "good.onnx", mismatched=False)
    _onnx_net(root / "bad.onnx", mismatched=True)
    return git_repo_with_hook(root, env)


def test_hook_passes_on_good_models_and_skips_plain_scripts(repo, env):
    result = run_pre_commit("run", "--files", "plot.py", "good.onnx", "README.md", cwd=repo, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "archlint" in result.stdout and "Passed" in result.stdout


def test_hook_with_only_non_model_files(repo, env):
    result = run_pre_commit("run", "--verbose", "--files", "plot.py", cwd=repo, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_pre_commit("run", "--files", "README.md", cwd=repo, env=env)
    assert result.returncode == 0 and "(no files to check)" in result.stdout


def test_hook_fails_on_a_broken_model_and_names_the_rule(repo, env):
    result = run_pre_commit("run", "--files", "good.onnx", "bad.onnx", cwd=repo, env=env)
    assert result.returncode == 1
    assert "Failed" in result.stdout
    assert "bad.onnx [merge]: AL101 error" in result.stdout
    assert "good.onnx" not in result.stdout  # clean models stay quiet
