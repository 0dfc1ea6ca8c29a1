"""archlint on a real exported transformer, next to ONNX shape inference alone.

    python bench/transformer_onnx.py [--runs N] [--quick] [--layers 12] [--hidden 64]

A Hugging Face ViT (``transformers.ViTModel``) built from a small config (12 layers, hidden size
64, 4 heads, random weights: nothing is downloaded) is exported to ONNX with
``torch.onnx.export`` by a subprocess, into a temporary folder. Then two whole processes run,
interleaved: ``archlint FILE.onnx --format json`` and the floor any ONNX shape tool pays,
``onnx.load`` + ``onnx.shape_inference.infer_shapes(strict_mode=True, data_prop=True)``.

Target: archlint within 2.0x of the floor (median of run-by-run ratios).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import PYTHON, Contestant, Row, Spread  # noqa: E402

BENCH = "transformer_onnx"
MAX_RATIO = 2.0

EXPORT_PROGRAM = """
import sys
import torch
from transformers import ViTConfig, ViTModel

path, layers, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                   intermediate_size=2 * hidden, image_size=224, patch_size=16)
model = ViTModel(config, add_pooling_layer=False).eval()
with torch.no_grad():
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, dynamo=False,
                      input_names=["pixel_values"], output_names=["last_hidden_state"],
                      opset_version=17)
import onnx
print(len(onnx.load(path, load_external_data=False).graph.node))
"""

#: The floor, shared with onnx_scale.py.
FLOOR_PROGRAM = """
import sys
import onnx
model = onnx.load(sys.argv[1], load_external_data=False)
inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
print(len(inferred.graph.value_info))
"""


def export_vit(directory: Path, layers: int, hidden: int) -> tuple[Path, int]:
    """Export the ViT from a subprocess (the harness never imports torch); its ONNX node count."""
    path = Path(directory) / f"vit_{layers}x{hidden}.onnx"
    done = subprocess.run([PYTHON, "-c", EXPORT_PROGRAM, str(path), str(layers), str(hidden)],
                          capture_output=True, text=True, cwd=directory)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:]
        raise harness.BenchError(f"export failed: {' '.join(last)}")
    return path, int(done.stdout.split()[-1])


def run(args) -> tuple[list[Row], list[str]]:
    label = f"ViT {args.layers}x{args.hidden}"
    with tempfile.TemporaryDirectory(prefix="archlint-bench-") as tmp:
        harness.progress(f"{BENCH}: exporting {label}")
        try:
            path, onnx_nodes = export_vit(Path(tmp), args.layers, args.hidden)
        except harness.BenchError as exc:
            return [harness.error_row(BENCH, label, exc)], []
        ours = Contestant(f"archlint {label}", harness.archlint_cmd(str(path), "--format", "json"),
                          ok=harness.ARCHLINT_OK, timeout_s=300)
        floor = Contestant(f"load+infer_shapes {label}", [PYTHON, "-c", FLOOR_PROGRAM, str(path)],
                           timeout_s=300)
        harness.interleave([ours, floor], harness.runs_of(args), args.warmup,
                           progress=harness.progress)
    case = f"{label} ({onnx_nodes} ONNX nodes)"
    if ours.error or floor.error:
        return [harness.error_row(BENCH, case, harness.BenchError(ours.error or floor.error))], []
    ratio = harness.paired_ratios(ours.times(), floor.times())
    rows = [
        Row(BENCH, f"{case} time", Spread.of(ours.times()).fmt(" s"),
            Spread.of(floor.times()).fmt(" s"), ratio.fmt("x"), f"<= {MAX_RATIO:g}x floor",
            harness.verdict(ratio.median <= MAX_RATIO), harness.shell_line(ours.cmd)),
        Row(BENCH, f"{case} peak RSS", Spread.of(ours.rss()).fmt(" MiB", 0),
            Spread.of(floor.rss()).fmt(" MiB", 0),
            harness.paired_ratios(ours.rss(), floor.rss()).fmt("x")),
    ]
    return rows, [harness.describe(c) for c in (ours, floor)]


def build_parser():
    parser = harness.base_parser(__doc__.splitlines()[0], default_runs=5, quick_runs=3)
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (default 12)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rows, details = run(args)
    return harness.report(rows, args, details)


if __name__ == "__main__":
    raise SystemExit(main())
