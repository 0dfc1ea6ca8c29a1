"""Hostile and broken inputs: each gets a one-line reason, never a traceback, and never costs the
other targets of the same run their report.

Most cases go through the CLI as a user runs it (``python -m archlint ... --format json``), all
in one run beside good targets, and again through the API (``archlint.api.lint``) in-process.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from archlint.api import lint
from archlint.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fixtures" / "onnx"))
import make_fixtures  # noqa: E402  (the ONNX engineer's fixture generator)

# --------------------------------------------------------------------------------------------
# the files

GOOD = '''\
import torch
import torch.nn as nn


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 3, 3, stride=2)  # 3x3 stride 2: checkerboard

    def forward(self, x):
        return self.up(self.down(x))


example_input = torch.zeros(1, 3, 32, 32)
'''

#: a skip connection whose branches are resampled differently: the merge rules have work to do
SMALL_UNET = '''\
import torch
import torch.nn as nn


class SmallUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        skip = self.stem(x)
        x = self.up(self.down(skip))
        x = torch.cat([x, skip], dim=1)
        return self.head(x)


example_input = torch.zeros(1, 3, 64, 64)
'''

MODEL_HEAD = "import torch\nimport torch.nn as nn\n\n\n"
TRIVIAL_NET = "class Net(nn.Module):\n    def forward(self, x):\n        return x\n\n\n"

PY_FILES = {
    "syntax_error.py": "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def forward(self, x:\n        return x\n",
    "raises_at_import.py": MODEL_HEAD + TRIVIAL_NET + 'raise RuntimeError("no dataset configured")\n',
    "exits_at_import.py": "import sys\n" + MODEL_HEAD + TRIVIAL_NET + "sys.exit(3)\n",
    "loops_at_import.py": MODEL_HEAD + TRIVIAL_NET + "while True:\n    pass\n",
    "needs_args.py": MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self, channels, depth):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3)

    def forward(self, x):
        return self.conv(x)
''',
    "empty.py": "",
}

#: models that are odd but analyzable: they must lint, with these (qualname -> shape) facts.
ODD_BUT_FINE = {
    # a dict example input: one graph input per tensor, named after its key
    "dict_example_input.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, batch):
        return self.a(batch["image"])


example_input = {"image": torch.zeros(1, 3, 16, 16)}
''', {"batch_image": (1, 3, 16, 16), "a": (1, 4, 16, 16)}),
    "data_dependent.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.a(x)
        if x.mean() > 0:
            x = self.b(x)
        return x


example_input = torch.zeros(1, 3, 16, 16)
''', {"a": (1, 4, 16, 16)}),
    "returns_dict.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return {"features": self.a(x), "pooled": x.mean((2, 3))}


example_input = torch.zeros(1, 3, 16, 16)
''', {"a": (1, 4, 8, 8)}),
    "returns_tuple.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.a(x), x


example_input = torch.zeros(1, 3, 16, 16)
''', {"a": (1, 4, 8, 8)}),
    "returns_none.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 5)

    def forward(self, x):
        self.features = self.a(x)


example_input = torch.zeros(1, 3, 16, 16)
''', {"a": (1, 4, 12, 12)}),
    "two_inputs.py": (MODEL_HEAD + '''\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, stride=2, padding=1)

    def forward(self, image, mask):
        return self.a(image) + self.b(mask)


example_input = (torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
''', {"a": (1, 4, 16, 16), "b": (1, 4, 8, 8)}),
}

#: target -> a regex its one-line reason must match.
PY_REASONS = {
    "syntax_error.py": r"syntax.*:5|:5.*syntax",
    "raises_at_import.py": r"RuntimeError.*no dataset configured",
    "exits_at_import.py": r"sys\.exit\(3\)",
    "loops_at_import.py": r"time(d)?[ -]?out|took longer",
    "needs_args.py": r"channels",
    "empty.py": r"no model",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "good.py").write_text(GOOD)
    (root / "small_unet.py").write_text(SMALL_UNET)
    for name, text in PY_FILES.items():
        (root / name).write_text(text)
    for name, (text, _) in ODD_BUT_FINE.items():
        (root / name).write_text(text)
    (root / "no_models").mkdir()
    (root / "no_models" / "script.py").write_text('print("not a model")\n')
    loop = root / "loop"
    loop.mkdir()
    (loop / "good.py").write_text(GOOD.replace("class Good", "class LoopGood"))
    (loop / "again").symlink_to(loop, target_is_directory=True)  # loop/again/again/... forever
    (root / "self_link.py").symlink_to(root / "self_link.py")  # ELOOP
    return root


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "archlint", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
    )


def by_target(payload: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in payload["models"]:
        out.setdefault(Path(m["target"]).name, []).append(m)
    return out


def assert_one_line(reason: str | None) -> None:
    assert reason, "expected a reason"
    assert "\n" not in reason.strip(), f"reason is not one line: {reason!r}"
    assert "Traceback" not in reason


# --------------------------------------------------------------------------------------------
# .py targets through the CLI: one run, bad targets around good ones


@pytest.fixture(scope="module")
def py_run(workdir):
    """Every bad .py target but the endless one, around good ones, in one run."""
    order = ["syntax_error.py", "raises_at_import.py", "exits_at_import.py", "good.py",
             "needs_args.py", "empty.py", *ODD_BUT_FINE,
             "no_models", "loop", "self_link.py"]
    proc = run_cli(*[str(workdir / t) for t in order], "--format", "json")
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture(scope="module")
def timeout_run(workdir):
    """An import that never ends, under --timeout 2, between two good targets."""
    loop_good = workdir / "loop" / "good.py"
    proc = run_cli(str(workdir / "loops_at_import.py"), str(workdir / "good.py"),
                   str(loop_good), "--timeout", "2", "--format", "json")
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_cli_run_survives_every_bad_target(py_run):
    proc, payload = py_run
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert payload is not None, f"no JSON on stdout (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.returncode == 2, proc.stderr[-2000:]


def test_cli_timeout_costs_one_target_only(timeout_run):
    """--timeout limits the target's import and capture, not archlint's own (torch) import, and
    the targets after a timed-out one are linted normally."""
    proc, payload = timeout_run
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert payload is not None, f"no JSON on stdout (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.returncode == 2, proc.stderr[-2000:]
    models = by_target(payload)
    (looping,) = models["loops_at_import.py"]
    assert_one_line(looping["error"])
    assert re.search(PY_REASONS["loops_at_import.py"], looping["error"], re.I), looping["error"]
    goods = models["good.py"]
    assert [g["error"] for g in goods] == [None, None], [g["error"] for g in goods]
    assert all("kernel-stride-checkerboard" in {f["rule"] for f in g["findings"]} for g in goods)


@pytest.mark.parametrize("target", sorted(set(PY_REASONS) - {"loops_at_import.py"}))
def test_cli_bad_py_target_gets_one_line_reason(py_run, target):
    _, payload = py_run
    entries = by_target(payload)[target]
    assert len(entries) == 1
    reason = entries[0]["error"]
    assert_one_line(reason)
    assert re.search(PY_REASONS[target], reason, re.I), reason
    assert entries[0]["findings"] == []


def test_cli_good_targets_still_linted_after_bad_ones(py_run):
    _, payload = py_run
    (good,) = [m for m in by_target(payload)["good.py"] if m["model"] == "Good"]
    assert good["error"] is None, good["error"]
    assert "kernel-stride-checkerboard" in {f["rule"] for f in good["findings"]}
    assert {n["name"]: n["shape"] for n in good["nodes"]}["up"] == [1, 3, 33, 33]


@pytest.mark.parametrize("target", sorted(ODD_BUT_FINE))
def test_cli_odd_models_are_linted(py_run, target):
    _, payload = py_run
    (entry,) = by_target(payload)[target]
    assert entry["error"] is None, entry["error"]
    shapes = {n["name"]: n["shape"] for n in entry["nodes"]}
    for name, shape in ODD_BUT_FINE[target][1].items():
        assert shapes.get(name) == list(shape), (name, shapes)


def test_cli_folder_without_models_is_an_error(py_run):
    _, payload = py_run
    (entry,) = by_target(payload)["no_models"]
    assert_one_line(entry["error"])
    assert re.search(r"no models? found", entry["error"])


def test_cli_symlinks_that_loop(py_run):
    _, payload = py_run
    models = by_target(payload)
    # the looping folder is walked once: its one model is linted exactly once
    loop_goods = [m for m in models["good.py"] if m["model"] == "LoopGood"]
    assert len(loop_goods) == 1 and loop_goods[0]["error"] is None
    (entry,) = models["self_link.py"]
    assert_one_line(entry["error"])
    assert re.search(r"symlink|symbolic link|loop", entry["error"], re.I), entry["error"]


# --------------------------------------------------------------------------------------------
# the same files through the API


@pytest.mark.parametrize("target", sorted(set(PY_REASONS) - {"loops_at_import.py"}))
def test_api_bad_py_target_gets_one_line_reason(workdir, target):
    report = lint(workdir / target)  # must not raise, not even SystemExit
    (model,) = report.models
    assert_one_line(model.error)
    assert re.search(PY_REASONS[target], model.error, re.I), model.error
    assert report.exit_code() == 2


def test_api_data_dependent_control_flow_says_where_capture_stopped(workdir):
    (model,) = lint(workdir / "data_dependent.py").models
    said = " ".join(model.notes) + (model.error or "") + str(model.graph.graph.get("capture_note"))
    assert "data_dependent.py:13" in said, said  # the `if x.mean() > 0:` line
    assert model.graph.nodes["a"]["shapes"][0] == (1, 4, 16, 16)


@pytest.mark.parametrize("target", sorted(ODD_BUT_FINE))
def test_api_odd_models_are_linted(workdir, target):
    (model,) = lint(workdir / target).models
    assert model.error is None, model.error
    for name, shape in ODD_BUT_FINE[target][1].items():
        assert model.graph.nodes[name]["shapes"][0] == shape


def test_two_inputs_mismatch_is_found(workdir):
    report = lint(workdir / "two_inputs.py")
    assert report.models[0].input_shapes == [(1, 3, 16, 16), (1, 1, 16, 16)]
    assert "skip-connection-mismatch" in {f.rule for f in report.findings}


def test_two_input_shapes_from_the_command_line(workdir):
    report = lint(workdir / "two_inputs.py", input_shapes=((1, 3, 20, 20), (1, 1, 40, 40)))
    (model,) = report.models
    assert model.error is None
    assert model.graph.nodes["b"]["shapes"][0] == (1, 4, 20, 20)
    assert "skip-connection-mismatch" not in {f.rule for f in report.findings}


# --------------------------------------------------------------------------------------------
# --input-shape


@pytest.mark.parametrize(
    "shape", ["1,3,abc,224", "1,3,,", "1;3;224;224", "1,3,0,224", "0,3,224,224", "1,3,-5,224", ""]
)
def test_cli_bad_input_shape_is_a_usage_error(workdir, shape):
    proc = run_cli(str(workdir / "good.py"), "--input-shape", shape, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "input-shape" in lines[0], proc.stderr


@pytest.mark.parametrize("target", ["good.py", "seed.onnx"])
@pytest.mark.parametrize("shape", [(1, 3, 0, 32), (1, 3, -4, 32)])
def test_api_bad_input_shape_is_a_config_error(workdir, target, shape):
    """The API validates shapes as the CLI does (config.check_shape), for both frontends."""
    path = workdir / target
    if target.endswith(".onnx"):
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])
        onnx.save(make_fixtures.model([node], [make_fixtures.tensor_input("x", [1, 3, 32, 32])],
                                      ["y"], [make_fixtures.weight("w", 4, 3, 3, 3)]), path)
    with pytest.raises(ConfigError, match="positive"):
        lint(path, input_shapes=(shape,))


def _timed_lint(path: Path, shape: tuple[int, ...]) -> tuple[float, object]:
    start = time.perf_counter()
    report = lint(path, input_shapes=(shape,))
    return time.perf_counter() - start, report


def test_huge_input_shape_costs_no_more_than_a_small_one(workdir):
    """Nothing may scale with the resolution: not the capture, not the passes, not a rule."""
    path = workdir / "small_unet.py"
    _timed_lint(path, (1, 3, 64, 64))  # warm up imports and caches
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    small = min(_timed_lint(path, (1, 3, 224, 224))[0] for _ in range(2))
    huge_times, reports = zip(*(_timed_lint(path, (1, 3, 100000, 100000)) for _ in range(2)))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    (model,) = reports[0].models
    assert model.error is None, model.error
    shapes = {n: model.graph.nodes[n]["shapes"][0] for n in model.graph}
    assert shapes["down"] == (1, 16, 50000, 50000)
    assert shapes["cat"] == (1, 16, 100000, 100000)
    assert min(huge_times) < 3 * small + 0.05, (min(huge_times), small)
    # one activation at 100000x100000 would be 120 GB; allow only noise
    assert grown_mib < 512, f"peak memory grew by {grown_mib:.0f} MiB"


# --------------------------------------------------------------------------------------------
# ONNX


def _conv_model(initializers: list[TensorProto], weight_name: str = "w") -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", weight_name], ["y"], name="conv", kernel_shape=[3, 3],
                            strides=[2, 2])
    return make_fixtures.model([node], [make_fixtures.tensor_input("x", [1, 3, 17, 17])], ["y"],
                               initializers)


def external_outside_model(folder: Path, sentinel: Path) -> onnx.ModelProto:
    """A weight stored as external data at a path outside the model's folder."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    w.data_location = TensorProto.EXTERNAL
    rel = os.path.relpath(sentinel, folder)
    for key, value in (("location", rel), ("offset", "0"), ("length", str(4 * 4 * 27))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _conv_model([w])


def declared_2gb_model() -> onnx.ModelProto:
    """A model holding an initializer that declares 2 GiB of float32 and carries no data."""
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[2**29])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], strides=[2, 2])
    return make_fixtures.model([node], [make_fixtures.tensor_input("x", [1, 3, 17, 17])], ["y"],
                               [make_fixtures.weight("w", 4, 3, 3, 3), big])


ONNX_BROKEN = {
    "broken_random_bytes.onnx": r"not a valid ONNX|corrupt|cannot load|protobuf",
    "broken_truncated.onnx": r"not a valid ONNX|corrupt|truncated|cannot load",
    "broken_empty.onnx": r"empty",
    "broken_future_opset_99.onnx": r"opset 99",
    "broken_cycle.onnx": r"cycle",
    "broken_missing_graph_input.onnx": r"'x'.*(missing graph input|no node)",
}


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx_bad")
    models = root / "models"
    models.mkdir()
    make_fixtures.write_fixtures(models)
    sentinel = root / "secret.bin"
    os.mkfifo(sentinel)  # opening it for reading blocks forever: reading it hangs the run
    onnx.save(external_outside_model(models, sentinel), models / "external_outside.onnx")
    onnx.save(declared_2gb_model(), models / "declared_2gb.onnx")
    return models


def test_onnx_broken_files_through_the_api(onnx_dir):
    for name, pattern in ONNX_BROKEN.items():
        report = lint(onnx_dir / name)
        (model,) = report.models
        assert_one_line(model.error)
        assert re.search(pattern, model.error, re.I), (name, model.error)
        assert report.exit_code() == 2


def test_onnx_custom_domain_op_is_kept_as_unknown(onnx_dir):
    (model,) = lint(onnx_dir / "custom_domain_op.onnx").models
    assert model.error is None, model.error
    assert "unknown" in {model.graph.nodes[n]["op"] for n in model.graph}


def test_onnx_external_data_outside_the_folder_is_never_read(onnx_dir):
    # run in a subprocess: a regression that opens the FIFO would hang, and the timeout says so
    proc = run_cli(str(onnx_dir / "external_outside.onnx"), "--format", "json", timeout=60)
    assert "Traceback" not in proc.stdout + proc.stderr
    (model,) = json.loads(proc.stdout)["models"]
    assert model["error"] is None, model["error"]
    assert {n["name"]: n["shape"] for n in model["nodes"]}["conv"] == [1, 4, 8, 8]


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child of a big pytest
# process would report the parent's peak; VmHWM belongs to the child's own address space.
MEASURED_CLI = (
    "import re, sys\n"
    "from archlint.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "sys.stderr.write(f'MAXRSS_KIB {hwm}\\n')\n"
    "sys.exit(code)\n"
)


def test_onnx_2gb_declared_tensor_is_never_allocated(onnx_dir):
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED_CLI, str(onnx_dir / "declared_2gb.onnx"), "--format", "json"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    (model,) = json.loads(proc.stdout)["models"]
    if model["error"] is not None:
        assert_one_line(model["error"])
    else:
        assert {n["name"]: n["shape"] for n in model["nodes"]}["conv"] == [1, 4, 8, 8]
    peak_mib = int(re.search(r"MAXRSS_KIB (\d+)", proc.stderr).group(1)) / 1024
    assert peak_mib < 1024, f"{peak_mib:.0f} MiB peak: the declared 2 GiB was allocated"


def test_onnx_cli_run_survives_every_broken_file(onnx_dir):
    targets = [*ONNX_BROKEN, "conv_transpose_k3_s2_checkerboard.onnx", "custom_domain_op.onnx"]
    proc = run_cli(*[str(onnx_dir / t) for t in targets], "--format", "json", timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2
    models = by_target(json.loads(proc.stdout))
    for name in ONNX_BROKEN:
        (entry,) = models[name]
        assert_one_line(entry["error"])
    (good,) = models["conv_transpose_k3_s2_checkerboard.onnx"]
    assert good["error"] is None
    assert "kernel-stride-checkerboard" in {f["rule"] for f in good["findings"]}
