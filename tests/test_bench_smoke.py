"""The benchmarks in bench/ still run: each script once, in its smallest form.

These check the plumbing (processes, interleaving, statistics, the table), not the targets:
targets are judged by ``python bench/run_all.py --check`` on a quiet machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
from synthetic_onnx import residual_chain  # noqa: E402

#: One measured run, no warm-up, the smallest cases.
FAST = ["--runs", "1", "--warmup", "0"]
#: The torch benches' plumbing does not need ResNet-50: a two-layer net traces in no time.
TINY_MODEL = """
from torch import nn


def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench_model") / "tiny.py"
    path.write_text(TINY_MODEL, encoding="utf-8")
    return path


def run_bench(script: str, args: list[str], tmp_path: Path) -> list[dict]:
    """Run ``bench/<script>`` and return its rows; fail on a bad exit or an errored row."""
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    errors = [r for r in rows if r["verdict"] == "error"]
    assert not errors, errors
    for row in rows:  # every row made it into the printed table
        assert row["case"] in proc.stdout
    return rows


def cases_of(rows: list[dict]) -> set[str]:
    return {r["case"] for r in rows}


def test_run_all_with_startup(tmp_path):
    rows = run_bench("run_all.py", ["--only", "startup", *FAST], tmp_path)
    assert {"--help time", "--help imports torch", "30-node .onnx imports torch"} <= cases_of(rows)
    help_row = next(r for r in rows if r["case"] == "--help imports torch")
    assert help_row["verdict"] in ("holds", "MISSED")


def test_onnx_scale(tmp_path):
    rows = run_bench("onnx_scale.py", ["--quick", *FAST, "--nodes", "30,90"], tmp_path)
    assert {"30 nodes time", "90 nodes peak RSS", "time 90 / 30"} <= cases_of(rows)
    assert all("KiB/node above" in r["archlint"] for r in rows if r["case"].endswith("peak RSS"))


def test_sweep(tmp_path):
    rows = run_bench("sweep.py", ["--quick", *FAST, "--cases", "onnx", "--onnx-nodes", "30",
                                  "--in-process-runs", "1"], tmp_path)
    assert {"onnx 30 nodes process time", "onnx 30 nodes lint() in process"} <= cases_of(rows)


def test_memory(tmp_path, tiny_model):
    rows = run_bench("memory.py", ["--quick", *FAST, "--model-file", str(tiny_model),
                                   "--model", "tiny", "--sizes", "32,64"], tmp_path)
    assert cases_of(rows) == {"tiny peak RSS 64 vs 32"}


@pytest.mark.skipif(importlib.util.find_spec("torchinfo") is None,
                    reason="torchinfo is in the bench extra: pip install 'archlint[bench]'")
def test_vs_torchinfo(tmp_path, tiny_model):
    rows = run_bench("vs_torchinfo.py", ["--quick", *FAST, "--model-file", str(tiny_model),
                                         "--model", "tiny", "--sizes", "32"], tmp_path)
    assert {"tiny 32x32 time", "tiny 32x32 peak RSS", "tiny 32x32 vs import+build"} <= cases_of(rows)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="the exported-transformer bench builds a transformers ViT")
def test_transformer_onnx(tmp_path):
    rows = run_bench("transformer_onnx.py", [*FAST, "--layers", "1", "--hidden", "32"], tmp_path)
    assert len(rows) == 2 and rows[0]["case"].startswith("ViT 1x32 (")
    assert rows[0]["verdict"] in ("holds", "MISSED")


# --- the harness itself ----------------------------------------------------------------------


def test_peak_rss_is_the_childs_own():
    allocate = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    big = harness.run_process([sys.executable, "-c", allocate])
    small = harness.run_process([sys.executable, "-c", "pass"])
    assert big.returncode == small.returncode == 0
    assert big.maxrss_mib - small.maxrss_mib > 150
    assert small.maxrss_mib < 100  # not the harness's (pytest's) own peak


def test_failed_and_timed_out_runs_are_reported():
    failing = harness.Contestant("fails", [sys.executable, "-c", "import sys; sys.exit(3)"])
    slow = harness.Contestant("slow", [sys.executable, "-c", "import time; time.sleep(30)"],
                              timeout_s=0.5)
    fine = harness.Contestant("fine", [sys.executable, "-c", "pass"])
    harness.interleave([failing, slow, fine], runs=2, warmup=0)
    assert "exit 3" in failing.error and "timed out" in slow.error
    assert fine.error is None and len(fine.samples) == 2


def test_paired_ratios_are_run_by_run():
    spread = harness.paired_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.0, 3.0)


def test_residual_chain_has_exactly_the_nodes_asked():
    import onnx

    for nodes in (1, 3, 7):
        model = residual_chain(nodes)
        onnx.checker.check_model(model)
        assert len(model.graph.node) == nodes
        assert len(model.graph.initializer) == 1
