"""The inputs real models take (a dict, keyword arguments, several tensors), constructor
arguments from the CLI and the config, and the mistakes users make with them: each with its
expected findings, or its one-line message and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archlint
from archlint.cli import main

HEAD = "import torch\nimport torch.nn as nn\n\n\n"

#: forward takes a dict; the depth branch is strided, so the fusion merges 32x32 with 16x16.
DICT_MODEL = HEAD + '''\
class Fusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.rgb = nn.Conv2d(3, 8, 3, padding=1)
        self.depth = nn.Conv2d(1, 8, 3, stride=STRIDE, padding=1)

    def forward(self, batch):
        return torch.cat([self.rgb(batch["image"]), self.depth(batch["depth"])], dim=1)  # merge
'''

#: forward(x, mask=None): the mask only comes through example_kwargs.
KWARGS_MODEL = HEAD + '''\
class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(1, 8, 3, stride=STRIDE, padding=1)

    def forward(self, x, mask=None, scale: float = 1.0):
        y = self.conv(x)
        if mask is not None:
            y = y + self.gate(mask)  # merge
        return y * scale
'''

#: forward(image, depth): two positional tensors with their own shapes.
TWO_INPUT_MODEL = HEAD + '''\
class TwoStream(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, image, depth):
        return self.a(image) + self.b(depth)  # merge
'''

#: needs constructor arguments; up_kernel=3 with stride 2 paints a checkerboard.
ARGS_MODEL = HEAD + '''\
class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class Net(nn.Module):
    def __init__(self, in_ch, up_kernel, width=8):
        super().__init__()
        self.stem = Stem()
        self.down = nn.Conv2d(8, width, 2, stride=2)
        pad = up_kernel % 2
        self.up = nn.ConvTranspose2d(width, width, up_kernel, 2, 1, output_padding=pad)  # up

    def forward(self, x):
        return self.up(self.down(self.stem(x)))


example_input = torch.zeros(1, 3, 32, 32)
'''


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith(marker))


def run(tmp_path: Path, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    code = main([*args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(tmp_path, *args, monkeypatch, capsys) -> tuple[int, dict]:
    code, out, err = run(tmp_path, *args, "--format", "json", monkeypatch=monkeypatch,
                         capsys=capsys)
    assert out.strip(), err
    return code, json.loads(out)


def rules_at(model: dict) -> list[tuple[str, int]]:
    return sorted((f["rule"], f["location"]["line"]) for f in model["findings"]
                  if f["severity"] != "info")


# --- a dict input ------------------------------------------------------------------------------


def test_dict_input_finds_the_mismatch(tmp_path, monkeypatch, capsys):
    text = DICT_MODEL.replace("STRIDE", "2") + \
        'example_input = {"image": torch.zeros(1, 3, 32, 32), "depth": (1, 1, 32, 32)}\n'
    (tmp_path / "fusion.py").write_text(text)
    code, payload = run_json(tmp_path, "fusion.py", monkeypatch=monkeypatch, capsys=capsys)
    (model,) = payload["models"]
    assert rules_at(model) == [("skip-connection-mismatch", line_of(text, "# merge"))]
    assert model["input_shapes"] == [[1, 3, 32, 32], [1, 1, 32, 32]]
    inputs = [n["name"] for n in model["nodes"] if n["op"] == "input"]
    assert inputs == ["batch_image", "batch_depth"]
    assert code == 1


def test_dict_input_clean_model_is_quiet(tmp_path, monkeypatch, capsys):
    text = DICT_MODEL.replace("STRIDE", "1") + \
        'example_input = {"image": (1, 3, 32, 32), "depth": (1, 1, 32, 32)}\n'
    (tmp_path / "fusion.py").write_text(text)
    code, payload = run_json(tmp_path, "fusion.py", monkeypatch=monkeypatch, capsys=capsys)
    assert rules_at(payload["models"][0]) == [] and code == 0


def test_dict_input_through_the_api(tmp_path):
    path = tmp_path / "fusion.py"
    path.write_text(DICT_MODEL.replace("STRIDE", "2"))
    report = archlint.lint(path, example_inputs={"image": (1, 3, 16, 16),
                                                 "depth": torch.zeros(1, 1, 16, 16)})
    (model,) = report.models
    assert model.error is None
    assert [f.rule for f in model.findings if f.severity.value != "info"] == \
        ["skip-connection-mismatch"]
    assert "16x16" in model.findings[0].message and "8x8" in model.findings[0].message


def test_dict_model_without_an_example_cannot_be_analyzed(tmp_path, monkeypatch, capsys):
    """No fake AL001 from a guessed tensor: the model is 'could not be analyzed', exit 2."""
    (tmp_path / "fusion.py").write_text(DICT_MODEL.replace("STRIDE", "1"))
    code, out, _ = run(tmp_path, "fusion.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "AL001" not in out
    assert ("could not be analyzed: cannot build an input for Fusion: forward reads batch as a "
            "dict (batch['image'], batch['depth'])") in out
    assert "example_input = {'image': ..., 'depth': ...}" in out


def test_dict_model_given_a_tensor_cannot_be_analyzed(tmp_path, monkeypatch, capsys):
    (tmp_path / "fusion.py").write_text(DICT_MODEL.replace("STRIDE", "1"))
    code, out, _ = run(tmp_path, "fusion.py", "--input-shape", "1,3,32,32",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "AL001" not in out
    assert "forward reads batch as a dict" in out and "the example input given is a tensor" in out


# --- keyword inputs ----------------------------------------------------------------------------


def test_example_kwargs_in_the_file(tmp_path, monkeypatch, capsys):
    text = KWARGS_MODEL.replace("STRIDE", "2") + \
        'example_input = torch.zeros(1, 3, 32, 32)\nexample_kwargs = {"mask": (1, 1, 32, 32)}\n'
    (tmp_path / "masked.py").write_text(text)
    code, payload = run_json(tmp_path, "masked.py", monkeypatch=monkeypatch, capsys=capsys)
    (model,) = payload["models"]
    assert rules_at(model) == [("skip-connection-mismatch", line_of(text, "# merge"))]
    assert [n["name"] for n in model["nodes"] if n["op"] == "input"] == ["x", "mask"]
    assert code == 1


def test_without_the_kwarg_the_default_branch_is_linted(tmp_path, monkeypatch, capsys):
    text = KWARGS_MODEL.replace("STRIDE", "2") + "example_input = torch.zeros(1, 3, 32, 32)\n"
    (tmp_path / "masked.py").write_text(text)
    code, payload = run_json(tmp_path, "masked.py", monkeypatch=monkeypatch, capsys=capsys)
    assert rules_at(payload["models"][0]) == [] and code == 0  # mask=None: no merge at all


def test_example_kwargs_through_the_api_and_an_inferred_positional_input(tmp_path):
    path = tmp_path / "masked.py"
    path.write_text(KWARGS_MODEL.replace("STRIDE", "1"))
    report = archlint.lint(path, example_kwargs={"mask": (1, 1, 224, 224)})
    (model,) = report.models
    assert model.error is None and model.input_assumed
    assert model.input_shapes == [(1, 3, 224, 224), (1, 1, 224, 224)]
    assert [f for f in model.findings if f.severity.value != "info"] == []


def test_misspelled_kwarg_gets_a_suggestion(tmp_path, monkeypatch, capsys):
    text = KWARGS_MODEL.replace("STRIDE", "1") + \
        'example_input = torch.zeros(1, 3, 8, 8)\nexample_kwargs = {"maks": (1, 1, 8, 8)}\n'
    (tmp_path / "masked.py").write_text(text)
    code, out, _ = run(tmp_path, "masked.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "example_kwargs gives 'maks', but Masked.forward has no such parameter " \
           "(did you mean 'mask'?)" in out


# --- several positional tensors ----------------------------------------------------------------


def test_two_inputs_with_their_own_shapes(tmp_path, monkeypatch, capsys):
    text = TWO_INPUT_MODEL + "example_input = (torch.zeros(1, 3, 32, 32), (1, 1, 30, 30))\n"
    (tmp_path / "two.py").write_text(text)
    code, payload = run_json(tmp_path, "two.py", monkeypatch=monkeypatch, capsys=capsys)
    (model,) = payload["models"]
    assert model["input_shapes"] == [[1, 3, 32, 32], [1, 1, 30, 30]]
    assert rules_at(model) == [("skip-connection-mismatch", line_of(text, "# merge"))]
    assert code == 1
    # the same shapes from the CLI, and matching shapes are clean
    code, payload = run_json(tmp_path, "two.py", "--input-shape", "1,3,32,32", "--input-shape",
                             "1,1,32,32", monkeypatch=monkeypatch, capsys=capsys)
    assert rules_at(payload["models"][0]) == [] and code == 0


def test_one_input_for_two_is_not_analyzed(tmp_path, monkeypatch, capsys):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    code, out, _ = run(tmp_path, "two.py", "--input-shape", "1,3,32,32",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "TwoStream.forward takes 2 inputs (image, depth) but depth is not given" in out


def test_an_unusable_example_input_is_not_analyzed(tmp_path, monkeypatch, capsys):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL + "example_input = {'image': object()}\n")
    code, out, _ = run(tmp_path, "two.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "bad example input for TwoStream: example_input['image'] must be a tensor" in out


# --- constructor arguments ---------------------------------------------------------------------


def test_constructor_arguments_from_the_cli(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    code, payload = run_json(tmp_path, "net.py", "--model", "Net(3, up_kernel=3)",
                             monkeypatch=monkeypatch, capsys=capsys)
    (model,) = payload["models"]
    assert model["model"] == "Net(3, up_kernel=3)"
    assert rules_at(model) == [("kernel-stride-checkerboard", line_of(ARGS_MODEL, "# up"))]
    assert code == 1
    code, payload = run_json(tmp_path, "net.py", "--model", "Net(3, up_kernel=4, width=16)",
                             monkeypatch=monkeypatch, capsys=capsys)
    assert rules_at(payload["models"][0]) == [] and code == 0


def test_constructor_arguments_from_the_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "net.py").write_text(ARGS_MODEL)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.archlint]\nmodels = ["pkg/net.py::Net(3, up_kernel=3)", '
        '"pkg/net.py::Net(in_ch=3, up_kernel=4)"]\n')
    code, payload = run_json(tmp_path, "pkg/net.py", monkeypatch=monkeypatch, capsys=capsys)
    by_name = {m["model"]: rules_at(m) for m in payload["models"]}
    assert by_name == {
        "Net(3, up_kernel=3)": [("kernel-stride-checkerboard", line_of(ARGS_MODEL, "# up"))],
        "Net(in_ch=3, up_kernel=4)": [],
    }
    assert code == 1
    # the same entries through the Python API and from a subfolder
    monkeypatch.chdir(tmp_path / "pkg")
    report = archlint.lint("net.py")
    assert sorted(m.model for m in report.models) == sorted(by_name)


def test_the_building_block_is_not_a_model_unless_named(tmp_path, monkeypatch, capsys):
    text = ARGS_MODEL.replace("def __init__(self, in_ch, up_kernel, width=8)",
                              "def __init__(self, in_ch=3, up_kernel=4, width=8)")
    (tmp_path / "net.py").write_text(text)
    code, payload = run_json(tmp_path, "net.py", monkeypatch=monkeypatch, capsys=capsys)
    assert [m["model"] for m in payload["models"]] == ["Net"]  # Stem is a part of Net
    code, payload = run_json(tmp_path, "net.py", "--model", "Stem", monkeypatch=monkeypatch,
                             capsys=capsys)
    assert [m["model"] for m in payload["models"]] == ["Stem"]


def test_a_block_is_not_linted_even_when_its_model_needs_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    code, out, _ = run(tmp_path, "net.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "(Stem)" not in out
    assert "Net needs in_ch, up_kernel" in out
    assert '--model "Net(in_ch=..., up_kernel=...)"' in out


# --- mistakes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, layer", [("3,32,32", "stem.conv (nn.Conv2d) reads 4-D input (N, C, H, W)")])
def test_missing_batch_dim_from_the_cli(tmp_path, monkeypatch, capsys, shape, layer):
    text = ARGS_MODEL.replace("def __init__(self, in_ch, up_kernel, width=8)",
                              "def __init__(self, in_ch=3, up_kernel=4, width=8)")
    (tmp_path / "net.py").write_text(text)
    code, out, _ = run(tmp_path, "net.py", "--input-shape", shape, monkeypatch=monkeypatch,
                       capsys=capsys)
    assert code == 2
    assert f"input shape {shape} for Net is missing the batch dim: its first layer {layer}" in out
    assert f"add the batch dim: --input-shape 1,{shape}" in out
    assert "sizes:" not in out  # no size claim from a misread input


def test_missing_batch_dim_in_the_file_for_a_linear_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "mlp.py").write_text(HEAD + '''\
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)


example_input = torch.zeros(16)
''')
    code, out, _ = run(tmp_path, "mlp.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "input shape 16 for MLP is missing the batch dim: its first layer fc (nn.Linear) " \
           "reads 2-D input, batch first" in out


def test_batched_input_is_not_flagged(tmp_path, monkeypatch, capsys):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    code, out, _ = run(tmp_path, "two.py", "--input-shape", "2,3,8,8", "--input-shape", "2,1,8,8",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "batch dim" not in out


def test_model_name_did_you_mean(tmp_path, monkeypatch, capsys):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    code, out, _ = run(tmp_path, "two.py", "--model", "twostream", monkeypatch=monkeypatch,
                       capsys=capsys)
    assert code == 2
    assert "--model twostream: two.py has no attribute 'twostream' (did you mean 'TwoStream'?)" in out


def test_model_name_lists_the_few_candidates(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    code, out, _ = run(tmp_path, "net.py", "--model", "Encoder", monkeypatch=monkeypatch,
                       capsys=capsys)
    assert code == 2
    assert "has no attribute 'Encoder' (models in this file: Stem, Net)" in out


@pytest.mark.parametrize("spec, message", [
    ("Net(3, up_kernel=k)", "k is not a literal; arguments must be numbers, strings"),
    ("Net(3", "expected NAME or NAME(literal arguments)"),
    ("Net(*args)", "*args and **kwargs cannot be given"),
    ("__import__('os').system('true')", "expected NAME or NAME(literal arguments)"),
])
def test_bad_model_spec_is_a_usage_error(tmp_path, monkeypatch, capsys, spec, message):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    code, out, err = run(tmp_path, "net.py", "--model", spec, monkeypatch=monkeypatch,
                         capsys=capsys)
    assert code == 2
    assert f"archlint: error: --model {spec!r}: {message}" in err


def test_constructor_argument_names_get_a_suggestion(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    code, out, _ = run(tmp_path, "net.py", "--model", "Net(3, up_kernle=3)",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "got an unexpected keyword argument 'up_kernle' (did you mean 'up_kernel'?)" in out
    code, out, _ = run(tmp_path, "net.py", "--model", "Net", monkeypatch=monkeypatch,
                       capsys=capsys)
    assert code == 2
    assert ('class Net needs constructor arguments (in_ch, up_kernel); give them as '
            '--model "Net(in_ch=..., up_kernel=...)"') in out


@pytest.mark.parametrize("flag", ["--select", "--ignore", "--extend-select"])
def test_rule_selector_did_you_mean(tmp_path, monkeypatch, capsys, flag):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    code, _, err = run(tmp_path, "two.py", flag, "skip-conection-mismatch",
                       monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert ("unknown rule selector 'skip-conection-mismatch' "
            "(did you mean 'skip-connection-mismatch'?)") in err


def test_archlint_rule_did_you_mean(capsys):
    assert main(["rule", "odd-size-strid2"]) == 2
    assert "unknown rule 'odd-size-strid2' (did you mean 'odd-size-stride2'?)" in \
        capsys.readouterr().err


def test_config_key_did_you_mean(tmp_path, monkeypatch, capsys):
    (tmp_path / "two.py").write_text(TWO_INPUT_MODEL)
    (tmp_path / "pyproject.toml").write_text("[tool.archlint]\ninput_shape = [1, 3, 8, 8]\n")
    code, _, err = run(tmp_path, "two.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "unknown key 'input_shape' in [tool.archlint] (did you mean 'input-shape'?)" in err


def test_bad_model_spec_in_the_config(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(ARGS_MODEL)
    (tmp_path / "pyproject.toml").write_text('[tool.archlint]\nmodels = ["net.py::Net(k=open)"]\n')
    code, _, err = run(tmp_path, "net.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "open is not a literal" in err


def test_a_list_annotated_forward_without_an_example_cannot_be_analyzed(tmp_path, monkeypatch,
                                                                       capsys):
    (tmp_path / "multi.py").write_text(HEAD + '''\
from typing import List


class Multi(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, views: List[torch.Tensor]):
        return sum(self.conv(v) for v in views)
''')
    code, out, _ = run(tmp_path, "multi.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "AL001" not in out
    assert "cannot build an input for Multi: forward's views is annotated" in out
    # a list of two views as the example: one graph input per view
    (tmp_path / "multi.py").write_text((tmp_path / "multi.py").read_text()
                                       + "example_input = ([(1, 3, 8, 8), (1, 3, 8, 8)],)\n")
    code, payload = run_json(tmp_path, "multi.py", monkeypatch=monkeypatch, capsys=capsys)
    (model,) = payload["models"]
    assert model["error"] is None and code == 0
    assert [n["name"] for n in model["nodes"] if n["op"] == "input"] == ["views_0", "views_1"]
