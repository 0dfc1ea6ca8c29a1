"""[tool.archlint] parsing and per-file ignores: bad values are one-line errors, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from archlint.config import ConfigError, Options, load_config
from archlint.frontends.source import defines_models


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.archlint]\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "body, message",
    [
        ('per-file-ignores = { "m.onnx" = 5 }', "per-file-ignores 'm.onnx' must be a list of strings"),
        ('per-file-ignores = { "m.onnx" = "AL101" }', "must be a list of strings"),
        ('sizes-range = ["a", 2]', "sizes-range must be [lo, hi]"),
        ("input-shape = [1, 3, 0, 8]", "input-shape: every dimension must be a positive integer"),
        ('fail-on = "fatal"', "fail-on must be one of"),
        ("colour = true", "unknown key 'colour'"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path=write_config(tmp_path, body))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_config_through_the_cli_is_one_line_and_exit_2(tmp_path):
    write_config(tmp_path, 'per-file-ignores = { "m.onnx" = 5 }')
    proc = subprocess.run([sys.executable, "-m", "archlint", "--help"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0  # --help reads no config
    (tmp_path / "m.onnx").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "archlint", "m.onnx"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "must be a list of strings" in proc.stderr


def test_per_file_ignores_match_however_the_path_is_spelled(tmp_path):
    config = write_config(tmp_path, 'per-file-ignores = { "sub/*.onnx" = ["AL101"] }')
    opts = load_config(path=config)
    target = tmp_path / "sub" / "s.onnx"
    assert "AL101" in opts.ignored_for(str(target))  # absolute
    assert "AL101" not in opts.ignored_for(str(tmp_path / "other" / "s.onnx"))
    assert "AL101" not in Options(per_file_ignores={"sub/*.onnx": ("AL101",)}).ignored_for(
        str(tmp_path / "other" / "s.onnx"))


def test_a_named_file_that_imports_a_model_from_elsewhere_is_captured():
    built_elsewhere = "from lib import make\nmodel = make()"
    assert defines_models(built_elsewhere, named=True)
    assert not defines_models(built_elsewhere)  # in a folder walk, only torch imports count
    assert defines_models("from .layers import Net\nnet = Net()")
    assert not defines_models("import os\nprint(os.getcwd())", named=True)
    assert not defines_models("x = 1\n", named=True)
