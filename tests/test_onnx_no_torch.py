"""The ONNX path never imports torch: it works in a process where ``import torch`` fails."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runs in a fresh interpreter; ``sys.modules['torch'] = None`` makes every ``import torch``
#: (direct or inside any library) raise ImportError.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None
    from archlint.api import lint

    results = {}
    for path in sys.argv[1:]:
        report = lint(path)
        [model] = report.models
        g = model.graph
        results[path] = {
            "error": model.error,
            "nodes": None if g is None else len(g),
            "known_shapes": None if g is None else sum(
                g.nodes[n]["shapes"] is not None for n in g.nodes),
            "node_errors": None if g is None else sorted(
                n for n in g.nodes if g.nodes[n]["error"]),
            "findings": sorted((f.rule, f.location.node) for f in model.findings),
        }
    try:
        import torch  # noqa: F401
        results["torch_importable"] = True
    except ImportError:
        results["torch_importable"] = False
    results["torch_modules"] = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps(results))
    """
)


def _fixtures(tmp_path: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "fixtures" / "onnx" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_fixtures(tmp_path)


def test_lint_onnx_files_with_torch_unimportable(tmp_path):
    fixtures = _fixtures(tmp_path / "fx")
    clean = fixtures["clean_residual_block.onnx"]
    failing_add = fixtures["skip_add_mismatch_16x16_vs_15x15.onnx"]
    checkerboard = fixtures["conv_transpose_k3_s2_checkerboard.onnx"]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(clean), str(failing_add), str(checkerboard)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["torch_importable"] is False and results["torch_modules"] == ["torch"]

    ok = results[str(clean)]
    assert ok["error"] is None and ok["nodes"] == 9 and ok["known_shapes"] == 9
    assert ok["findings"] == []

    bad = results[str(failing_add)]
    assert bad["node_errors"] == ["skip_add"]
    assert bad["known_shapes"] == 2  # the input and the conv before the failing Add

    up = results[str(checkerboard)]
    assert up["error"] is None
    assert ["kernel-stride-checkerboard", "up"] in up["findings"]
