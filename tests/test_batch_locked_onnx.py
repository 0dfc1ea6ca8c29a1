"""AL106 batch-locked on ONNX files: what archlint reports against what onnxruntime does at batch 2.

The fixtures (fixtures/onnx/make_fixtures.py, built in a temporary folder) have a symbolic batch
N; the real networks of onnx's backend test data declare batch 1, so each is also linted with its
batch made symbolic, and archlint's lock must be exactly the node where onnxruntime fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from archlint.api import lint
from archlint.config import Options

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "fixtures/onnx/make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.write_fixtures(tmp_path_factory.mktemp("onnx"))


def locks(path, **options):
    report = lint(Path(path), config=Options(select=("ALL",), **options))
    return [f for m in report.models for f in m.findings if f.rule == "batch-locked"]


def failing_node(path: Path, batch: int) -> str | None:
    """The node onnxruntime names when the model fails at ``batch``; None when it runs."""
    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer}
    feed = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feed[value.name] = np.random.default_rng(0).standard_normal([batch, *dims[1:]]).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        outputs = session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        match = re.search(r"node\. Name:'([^']+)'", str(exc))
        return match.group(1) if match else str(exc)
    assert outputs[0].shape[0] == batch  # ran: the batch came through
    return None


#: fixture -> the ONNX node that writes the literal batch (the Expand reads only constants, so
#: it is no IR node: the location names it all the same)
LOCK_NODE = {"batch_locked_reshape_1xC.onnx": "flatten_batch",
             "batch_locked_expand_cls_concat.onnx": "cls_expand"}


def test_locked_fixtures_are_reported_at_the_node_that_writes_the_literal_batch(fixtures):
    module, paths = fixtures
    for name, node in LOCK_NODE.items():
        assert module.MANIFEST[name] == "batch-locked"
        found = locks(paths[name])
        assert [f.location.node for f in found] == [node], name
        assert found[0].location.file == str(paths[name]) and found[0].location.line is None
        assert "works only at batch 1" in found[0].message and found[0].fix
        # the truth: batch 1 runs, batch 2 fails (at the lock, or at the Concat it feeds)
        assert failing_node(paths[name], 1) is None
        assert failing_node(paths[name], 2) in (node, "prepend_cls")


def test_reshape_fix_names_0_and_minus_1(fixtures):
    _, paths = fixtures
    [finding] = locks(paths["batch_locked_reshape_1xC.onnx"])
    assert "[0, C]" in finding.fix and "[-1, C]" in finding.fix and "flatten(1)" in finding.fix


def test_fixed_twins_stay_quiet_and_run_at_every_batch(fixtures):
    _, paths = fixtures
    for name in ("batch_free_reshape_0xC.onnx", "batch_free_reshape_minus1xC.onnx",
                 "batch_free_expand_cls_concat.onnx"):
        assert locks(paths[name]) == [], name
        assert failing_node(paths[name], 2) is None and failing_node(paths[name], 5) is None


def test_every_other_onnx_fixture_is_quiet(fixtures):
    module, paths = fixtures
    for name, expected in module.MANIFEST.items():
        if expected != "batch-locked":
            assert locks(paths[name]) == [], name


def test_a_given_batch_does_not_hide_the_lock(fixtures):
    """--input-shape 1,... picks the example; the file's symbolic batch is still the signal."""
    _, paths = fixtures
    found = locks(paths["batch_locked_reshape_1xC.onnx"], input_shapes=((1, 3, 16, 16),))
    assert [f.location.node for f in found] == ["flatten_batch"]


def test_a_fixed_batch_in_the_file_is_no_signal():
    """The backend's real networks declare batch 1: nothing says the batch is free."""
    for path in sorted(LIGHT.glob("*.onnx"))[:3]:
        assert locks(path) == [], path.name


def _with_symbolic_batch(path: Path, out: Path) -> Path:
    model = onnx.load(str(path))
    weights = {t.name for t in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in weights:
            continue
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    onnx.save(model, str(out))
    return out


LIGHT_FAST = ["light_bvlc_alexnet.onnx", "light_squeezenet.onnx", "light_shufflenet.onnx"]


def _check_light(name: str, tmp_path: Path) -> None:
    path = _with_symbolic_batch(LIGHT / name, tmp_path / name)
    reported = [f.location.node for f in locks(path)]
    truth = failing_node(path, 2)
    assert reported == ([truth] if truth else []), (name, reported, truth)


@pytest.mark.parametrize("name", LIGHT_FAST)
def test_real_network_with_a_symbolic_batch_lock_is_where_onnxruntime_fails(name, tmp_path):
    _check_light(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in LIGHT.glob("*.onnx") if p.name not in LIGHT_FAST))
def test_every_real_network_with_a_symbolic_batch(name, tmp_path):
    _check_light(name, tmp_path)
