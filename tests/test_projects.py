"""Models that live in real projects: packages, src/ layouts, sibling helper packages and
monorepos, linted from the project root, from a subfolder, and through pre-commit.

Each layout is a small repository written to a temp dir. Its model carries one known bug (a
stride-2 transposed conv with kernel 3: ``kernel-stride-checkerboard``, AL102) on a line marked
``# bug``; its helper modules hold building blocks that need constructor arguments, which must
never be reported as models of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archlint.cli import main

REPO = Path(__file__).resolve().parents[1]

# --- building blocks shared by the layouts -----------------------------------------------------

LAYERS = '''\
import torch.nn as nn


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


class Up(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1)  # bug

    def forward(self, x):
        return self.up(x)
'''


def decoder(imports: str) -> str:
    return f'''\
import torch
import torch.nn as nn
{imports}


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBlock(3, 8)
        self.down = nn.Conv2d(8, 8, 2, stride=2)
        self.up = Up(8)

    def forward(self, x):
        return self.up(self.down(self.stem(x)))


example_input = torch.zeros(1, 3, 32, 32)
'''


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


#: layout -> (files, the model file, the line of the bug, a subfolder to lint from)
LAYOUTS: dict[str, tuple[dict[str, str], str, str, str]] = {
    "flat": (
        {
            "pyproject.toml": '[project]\nname = "flat"\n',
            "layers.py": LAYERS,
            "decoder.py": decoder("from layers import ConvBlock, Up"),
            "docs/index.md": "# docs\n",
        },
        "decoder.py", "layers.py", "docs",
    ),
    "src-layout": (
        {
            "pyproject.toml": '[project]\nname = "seg"\n',
            "src/seg/__init__.py": "",
            "src/seg/layers.py": LAYERS,
            "src/seg/models/__init__.py": "from .decoder import Decoder\n",
            "src/seg/models/decoder.py": decoder(
                "from seg.layers import ConvBlock\nfrom ..layers import Up"),
        },
        "src/seg/models/decoder.py", "src/seg/layers.py", "src/seg/models",
    ),
    "relative-imports": (
        {
            "setup.cfg": "[metadata]\nname = pkgnet\n",
            "pkgnet/__init__.py": "",
            "pkgnet/layers.py": LAYERS,
            "pkgnet/nets/__init__.py": "",
            "pkgnet/nets/decoder.py": decoder("from ..layers import ConvBlock, Up"),
        },
        "pkgnet/nets/decoder.py", "pkgnet/layers.py", "pkgnet/nets",
    ),
    "sibling-package": (
        {
            "pyproject.toml": '[project]\nname = "app"\n',
            "helpers/__init__.py": "",
            "helpers/layers.py": LAYERS,
            # models/ has no __init__.py: `from models.x import` resolves from the project root
            "models/blocks.py": "from helpers.layers import ConvBlock, Up\n",
            "models/decoder.py": decoder("from models.blocks import ConvBlock, Up"),
        },
        "models/decoder.py", "helpers/layers.py", "models",
    ),
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request, tmp_path) -> tuple[Path, str, str, str]:
    files, model, bug_file, subfolder = LAYOUTS[request.param]
    return write(tmp_path / request.param, files), model, bug_file, subfolder


def bug_line(root: Path, bug_file: str) -> int:
    lines = (root / bug_file).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.rstrip().endswith("# bug"))


def lint(cwd: Path, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    code = main([*args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


# --- every layout, from the root and from a subfolder ------------------------------------------


def test_layout_from_the_root(layout, monkeypatch, capsys):
    root, model, bug_file, _ = layout
    code, out, err = lint(root, model, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1, out + err
    # the helper that holds the bug is shown relative to the working directory, as the target
    assert f"\n  {bug_file}:{bug_line(root, bug_file)}: AL102 warning" in out.replace(os.sep, "/")
    assert "(Decoder)" in out
    assert "error" not in out.replace("0 errors", ""), out  # no import failure, no AL001


def test_layout_walked_from_the_root(layout, monkeypatch, capsys):
    """`archlint .`: the model is found; files of building blocks are not models."""
    root, model, bug_file, _ = layout
    code, out, err = lint(root, ".", "--format", "json", monkeypatch=monkeypatch, capsys=capsys)
    import json

    payload = json.loads(out)
    linted = {(Path(m["target"]).as_posix(), m["model"]) for m in payload["models"]}
    assert linted == {(model, "Decoder")}, linted
    (found,) = [f for f in payload["models"][0]["findings"] if f["severity"] != "info"]
    assert found["rule"] == "kernel-stride-checkerboard"
    assert found["location"]["line"] == bug_line(root, bug_file)
    assert code == 1


def test_layout_from_a_subfolder(layout, monkeypatch, capsys):
    root, model, bug_file, subfolder = layout
    target = os.path.relpath(root / model, root / subfolder)
    code, out, err = lint(root / subfolder, target, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1, out + err
    assert f":{bug_line(root, bug_file)}: AL102 warning" in out
    assert "could not be analyzed" not in out


def test_two_layouts_in_one_run_do_not_share_modules(tmp_path, monkeypatch, capsys):
    """Each target imports its own `layers` module, even when an earlier one had the same name."""
    a = write(tmp_path / "a", {"pyproject.toml": "", "layers.py": LAYERS,
                               "decoder.py": decoder("from layers import ConvBlock, Up")})
    fixed = LAYERS.replace("3, stride=2, padding=1, output_padding=1)  # bug", "4, stride=2, padding=1)")
    b = write(tmp_path / "b", {"pyproject.toml": "", "layers.py": fixed,
                               "decoder.py": decoder("from layers import ConvBlock, Up")})
    code, out, _ = lint(tmp_path, str(a / "decoder.py"), str(b / "decoder.py"), "--format", "json",
                        monkeypatch=monkeypatch, capsys=capsys)
    import json

    findings = {Path(m["target"]).parent.name: [f["rule"] for f in m["findings"]
                                                if f["severity"] != "info"]
                for m in json.loads(out)["models"]}
    assert findings == {"a": ["kernel-stride-checkerboard"], "b": []}
    assert code == 1
    assert "layers" not in sys.modules or "tmp" not in str(getattr(sys.modules["layers"], "__file__", ""))


def test_relative_import_without_a_package_says_what_is_missing(tmp_path, monkeypatch, capsys):
    root = write(tmp_path, {"pyproject.toml": "", "nets/layers.py": LAYERS,
                            "nets/decoder.py": decoder("from .layers import ConvBlock, Up")})
    code, out, _ = lint(root, "nets/decoder.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "attempted relative import" in out and "has no __init__.py" in out


def test_pythonpath_in_config(tmp_path, monkeypatch, capsys):
    """A helper outside the package and the project root resolves through `pythonpath`."""
    root = write(tmp_path, {
        "pyproject.toml": '[tool.archlint]\npythonpath = ["third_party"]\n',
        "third_party/netlib/__init__.py": "",
        "third_party/netlib/layers.py": LAYERS,
        "models/decoder.py": decoder("from netlib.layers import ConvBlock, Up"),
    })
    code, out, _ = lint(root / "models", "decoder.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "AL102 warning" in out, out
    (root / "pyproject.toml").write_text("[tool.archlint]\n")
    code, out, _ = lint(root / "models", "decoder.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "No module named 'netlib'" in out and "pythonpath" in out


# --- a monorepo: each project's own [tool.archlint] ----------------------------------------------

MONOREPO = {
    # both projects have a package named `models` with a `blocks` module, as real ones do
    "vision/pyproject.toml": '[tool.archlint]\nignore = ["kernel-stride-checkerboard"]\n',
    "vision/models/__init__.py": "",
    "vision/models/blocks.py": LAYERS,
    "vision/models/decoder.py": decoder("from .blocks import ConvBlock, Up"),
    "audio/pyproject.toml": ('[tool.archlint]\nselect = ["kernel-stride-checkerboard"]\n'
                             'input-shape = [1, 2, 64]\n'),
    "audio/models/__init__.py": "",
    "audio/models/blocks.py": '''\
import torch.nn as nn


class Up(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.up = nn.ConvTranspose1d(channels, channels, 5, stride=2)  # bug

    def forward(self, x):
        return self.up(x)
''',
    "audio/models/vocoder.py": '''\
import torch.nn as nn
from models.blocks import Up


class Vocoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Conv1d(2, 4, 3, padding=1)
        self.up = Up(4)

    def forward(self, x):
        return self.up(self.inp(x))
''',
}


@pytest.fixture
def monorepo(tmp_path) -> Path:
    root = write(tmp_path / "mono", MONOREPO)
    (root / ".git").mkdir()
    return root


def test_monorepo_each_project_uses_its_own_config(monorepo, monkeypatch, capsys):
    import json

    code, out, err = lint(monorepo, "vision", "audio", "--format", "json",
                          monkeypatch=monkeypatch, capsys=capsys)
    models = {m["model"]: m for m in json.loads(out)["models"]}
    assert set(models) == {"Decoder", "Vocoder"}, out + err
    assert [f["rule"] for f in models["Decoder"]["findings"]] == ["input-size-constraints"]
    # (vision ignores the checkerboard rule; the info on 1x1 inputs stays)
    assert [f["rule"] for f in models["Vocoder"]["findings"]] == ["kernel-stride-checkerboard"]
    assert models["Vocoder"]["input_shapes"] == [[1, 2, 64]]  # audio's input-shape
    assert code == 1


def test_monorepo_from_inside_one_project(monorepo, monkeypatch, capsys):
    code, out, _ = lint(monorepo / "vision" / "models", "decoder.py", "../../audio/models/vocoder.py",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1
    assert "vocoder.py (Vocoder)" in out and "AL102 warning" in out
    assert "decoder.py (Decoder)" in out
    assert out.count("AL102") == 1


def test_show_settings_names_each_targets_config(monorepo, monkeypatch, capsys):
    code, out, _ = lint(monorepo, "--show-settings", "vision/models/decoder.py",
                        "audio/models/vocoder.py", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    vision, audio = out.split("audio/models/vocoder.py:")
    assert f"config: {(monorepo / 'vision' / 'pyproject.toml').resolve()}" in vision
    assert "imported as: models.decoder" in vision
    assert "ignore: kernel-stride-checkerboard" in vision
    assert f"config: {(monorepo / 'audio' / 'pyproject.toml').resolve()}" in audio
    assert "select: kernel-stride-checkerboard" in audio and "input-shapes: 1,2,64" in audio
    assert f"project root: {(monorepo / 'audio').resolve()}" in audio


def test_config_flag_beats_the_nearest_config(monorepo, monkeypatch, capsys):
    code, out, _ = lint(monorepo, "vision", "--config", "audio/pyproject.toml",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "AL102" in out  # vision linted under audio's select


# --- pre-commit: the hook on each layout -------------------------------------------------------

pytest.importorskip("yaml")

from hooks import git_repo_with_hook, run_pre_commit  # noqa: E402
from hooks import precommit_env as hook_env  # noqa: E402


@pytest.fixture(scope="module")
def precommit_env(tmp_path_factory) -> dict[str, str]:
    return hook_env(tmp_path_factory.mktemp("pre-commit-home"))


def pre_commit_repo(root: Path, env: dict[str, str]) -> Path:
    return git_repo_with_hook(root, env)


def pre_commit(root: Path, env: dict[str, str], *files: str) -> subprocess.CompletedProcess:
    args = ["--files", *files] if files else ["--all-files"]
    return run_pre_commit("run", *args, cwd=root, env=env)


def test_pre_commit_on_each_layout(tmp_path, precommit_env):
    """One git repository holding every layout; the hook on all its files names each model's
    bug and nothing else (helpers, __init__ files and building blocks pass quietly)."""
    root = tmp_path / "repo"
    for name, (files, *_rest) in LAYOUTS.items():
        write(root / name, files)
    pre_commit_repo(root, precommit_env)
    result = pre_commit(root, precommit_env)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "could not be analyzed" not in out, out
    for name, (_files, model, bug_file, _sub) in LAYOUTS.items():
        assert f"{name}/{model} (Decoder)" in out, out
        assert f"  {name}/{bug_file}:{bug_line(root / name, bug_file)}: AL102 warning" in out
    assert out.count("AL102 warning") == len(LAYOUTS)


def test_pre_commit_on_the_monorepo(tmp_path, precommit_env):
    root = pre_commit_repo(write(tmp_path / "mono", MONOREPO), precommit_env)
    result = pre_commit(root, precommit_env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "audio/models/blocks.py:7: AL102 warning" in result.stdout
    assert "vision/models/blocks.py" not in result.stdout  # ignored by vision's config
    # committing only the clean project's files passes
    result = pre_commit(root, precommit_env, "vision/models/decoder.py", "vision/models/blocks.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_passes_a_fixed_package(tmp_path, precommit_env):
    files, model, bug_file, _ = LAYOUTS["relative-imports"]
    fixed = dict(files)
    fixed[bug_file] = LAYERS.replace("3, stride=2, padding=1, output_padding=1)  # bug",
                                     "4, stride=2, padding=1)")
    root = pre_commit_repo(write(tmp_path / "fixed", fixed), precommit_env)
    result = pre_commit(root, precommit_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout


def test_monorepo_fail_on_is_per_project(monorepo, monkeypatch, capsys):
    audio = monorepo / "audio" / "pyproject.toml"
    audio.write_text(audio.read_text() + 'fail-on = "error"\n')
    code, out, _ = lint(monorepo, "audio", "vision", monkeypatch=monkeypatch, capsys=capsys)
    assert "AL102 warning" in out and code == 0  # audio's warning is below its fail-on
    code, out, _ = lint(monorepo, "audio", "--fail-on", "warning", monkeypatch=monkeypatch,
                        capsys=capsys)
    assert code == 1  # the command line beats the config


def test_walk_lints_a_model_that_needs_arguments_and_no_one_uses(tmp_path, monkeypatch, capsys):
    """A folder walk skips a file of layers only when another file uses them: a model class
    that needs arguments and is used nowhere is reported, with how to give them."""
    root = write(tmp_path, {"pyproject.toml": "", "layers.py": LAYERS,
                            "unet.py": "import torch.nn as nn\nfrom layers import ConvBlock\n\n\n"
                                       "class UNet(nn.Module):\n"
                                       "    def __init__(self, classes):\n"
                                       "        super().__init__()\n"
                                       "        self.b = ConvBlock(3, classes)\n\n"
                                       "    def forward(self, x):\n        return self.b(x)\n"})
    code, out, _ = lint(root, ".", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert "layers.py" not in out
    assert "unet.py" in out and 'give them as --model "UNet(classes=...)"' in out
    (root / "pyproject.toml").write_text('[tool.archlint]\nmodels = ["unet.py::UNet(classes=4)"]\n')
    code, out, _ = lint(root, ".", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and "could not be analyzed" not in out, out
