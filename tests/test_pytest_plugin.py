"""The pytest plugin on a temporary project: fixture, marker, options, assert_clean, --archlint."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest_plugins = ["pytester"]


def _conv(name: str, x: str, out: str, s: int, p: int):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), f"{name}_w")
    return helper.make_node("Conv", [x, w.name], [out], name=name, kernel_shape=[3, 3],
                            strides=[s, s], pads=[p] * 4), w


def _save(path: Path, nodes, inits, hw: int, out: str) -> None:
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def write_models(folder: Path) -> None:
    conv, w = _conv("conv1", "x", "c", 1, 1)
    _save(folder / "clean.onnx", [conv, helper.make_node("Relu", ["c"], ["y"], name="relu")], [w], 16, "y")
    a, wa = _conv("branch_a", "x", "a", 2, 1)  # 17 -> 9
    b, wb = _conv("branch_b", "x", "b", 2, 0)  # 17 -> 8
    cat = helper.make_node("Concat", ["a", "b"], ["y"], name="merge", axis=1)
    _save(folder / "bad.onnx", [a, b, cat], [wa, wb], 17, "y")


ARCH_TESTS = """
    import pytest
    from archlint.testing import assert_clean

    def test_clean_model(archlint):
        report = archlint("clean.onnx")
        report.assert_clean()
        assert report.models[0].graph is not None

    def test_bad_model(archlint):
        archlint.assert_clean("bad.onnx")

    @pytest.mark.archlint(ignore=["skip-connection-mismatch"])
    def test_bad_model_with_rule_ignored(archlint):
        archlint.assert_clean("bad.onnx")

    def test_plain_assert_clean():
        assert_clean("bad.onnx")

    def test_plain_assert_clean_with_ignore():
        assert_clean("bad.onnx", ignore=["AL101"])

    def test_unknown_selector(archlint):
        archlint("clean.onnx", select=["AL9999"])
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    write_models(pytester.path)
    # One rule, so that the expectations below do not move when rules are added.
    pytester.makepyprojecttoml("[tool.archlint]\nselect = ['skip-connection-mismatch']\n")
    pytester.makepyfile(test_arch=textwrap.dedent(ARCH_TESTS))
    return pytester


def test_passing_and_failing_architecture_tests(project):
    result = project.runpytest("-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=3, failed=3)
    # A bad selector fails its test with one line, no traceback into archlint.
    result.stdout.fnmatch_lines(["*_ test_unknown_selector _*",
                                 "archlint: unknown rule selector 'AL9999' (see 'archlint rules')"])
    assert "During handling" not in result.stdout.str()
    assert "findings.py" not in result.stdout.str()  # the traceback stops at the test
    out = result.stdout.str()
    # The failure names the rule, the location, and the fix.
    result.stdout.re_match_lines([
        r"E\s+AssertionError: archlint found 1 problem\(s\) at or above warning:",
        r"E\s+bad\.onnx \(merge\) \[skip-connection-mismatch\] error: .*9x9.*8x8.*",
        r"E\s+fix: .+",
    ])
    assert "test_bad_model FAILED" in out or "FAILED test_arch.py::test_bad_model" in out


def test_command_line_ignore_applies_to_the_fixture(project):
    result = project.runpytest("-p", "no:cacheprovider", "--archlint-ignore", "AL101",
                               "-k", "test_bad_model")
    result.assert_outcomes(passed=2)


def test_command_line_select_applies_and_marker_select_wins(project):
    project.makepyfile(test_select=textwrap.dedent("""
        import pytest

        def test_by_command_line(archlint):
            archlint.assert_clean("bad.onnx")

        @pytest.mark.archlint(select=["AL101"])
        def test_marker_select_beats_command_line(archlint):
            archlint.assert_clean("bad.onnx")
    """))
    # The command line selects kernel-stride-checkerboard, which bad.onnx does not trigger...
    result = project.runpytest("-p", "no:cacheprovider", "--archlint-select=AL102", "test_select.py")
    # ...except where the marker selects skip-connection-mismatch again.
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_marker_select_beats_command_line*"])


def test_unknown_marker_argument_is_a_usage_error(project):
    project.makepyfile(test_typo=textwrap.dedent("""
        import pytest

        @pytest.mark.archlint(selct=["AL001"])
        def test_typo(archlint):
            archlint.assert_clean("clean.onnx")
    """))
    result = project.runpytest("-p", "no:cacheprovider", "test_typo.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*@pytest.mark.archlint got unknown argument(s) selct*"])


def test_options_and_marker_are_registered(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*archlint*", "*--archlint-select=RULES*", "*--archlint-ignore=RULES*"])
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.archlint(select=None, ignore=None*"])


def test_models_from_config_are_collected_with_the_flag(project):
    project.makepyprojecttoml(
        "[tool.archlint]\nselect = ['AL101']\nmodels = ['clean.onnx', 'bad.onnx', 'gone.onnx']\n"
    )
    without = project.runpytest("-p", "no:cacheprovider", "--co", "-q", "test_arch.py")
    assert "archlint[" not in without.stdout.str()
    listed = project.runpytest("-p", "no:cacheprovider", "--co", "-q", "--archlint", "test_arch.py")
    # the three model items are counted with the collected tests, not left out of the total
    n_tests = without.stdout.str().count("::")
    listed.stdout.fnmatch_lines([f"{n_tests + 3} test*collected*"])
    (project.path / "test_arch.py").unlink()
    result = project.runpytest("-p", "no:cacheprovider", "-v", "--archlint")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "pyproject.toml::archlint?clean.onnx? PASSED*",
        "*bad.onnx (merge) ?skip-connection-mismatch? error*",
        "*gone.onnx: no such file (listed in ?tool.archlint? models)*",
    ])


def test_plugin_imports_nothing_heavy():
    probe = (
        "import sys, archlint.pytest_plugin, archlint.testing;"
        "print(sorted(m for m in ('torch', 'onnx', 'networkx', 'numpy', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_models_with_constructor_arguments_in_a_package(pytester):
    """`pytest --archlint` on a package with relative imports, each entry built with its own
    constructor arguments (a checkerboard only with kernel 3)."""
    pytester.makepyprojecttoml(
        "[tool.archlint]\nselect = ['kernel-stride-checkerboard']\n"
        "models = ['pkg/net.py::Net(up_kernel=4)', 'pkg/net.py::Net(up_kernel=3)']\n"
    )
    pkg = pytester.path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(textwrap.dedent("""\
        import torch.nn as nn


        def up(channels, kernel):
            return nn.ConvTranspose2d(channels, channels, kernel, 2, 1, output_padding=kernel % 2)
    """))
    (pkg / "net.py").write_text(textwrap.dedent("""\
        import torch
        import torch.nn as nn

        from .layers import up


        class Net(nn.Module):
            def __init__(self, up_kernel):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1)
                self.up = up(8, up_kernel)

            def forward(self, x):
                return self.up(self.conv(x))


        example_input = torch.zeros(1, 3, 16, 16)
    """))
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--archlint")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*archlint?pkg/net.py::Net(up_kernel=4)? PASSED*",
        "*archlint?pkg/net.py::Net(up_kernel=3)? FAILED*",
        "*pkg/net.py:11 ?kernel-stride-checkerboard? warning: nn.ConvTranspose2d with kernel_size=3*",
    ])
