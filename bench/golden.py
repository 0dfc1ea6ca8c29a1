"""Byte-identical outputs across a performance change.

``python bench/golden.py save DIR`` runs ``archlint FILE --format json`` and ``--format text`` on
every ONNX fixture (``fixtures/onnx/make_fixtures.py``), the onnx package's light backend models
and a synthetic residual chain, and stores stdout and the exit status under DIR.
``python bench/golden.py check DIR`` runs the same and exits 1 on the first difference. Run
``save`` before a speed change and ``check`` after it: a faster archlint must say the same thing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def model_files(work: Path, chain_nodes: int) -> list[Path]:
    subprocess.run([sys.executable, str(ROOT / "fixtures/onnx/make_fixtures.py"), str(work / "fixtures")],
                   check=True, stdout=subprocess.DEVNULL)
    write = ("import sys; sys.path.insert(0, sys.argv[1]); from synthetic_onnx import write_residual_chain;"
             "from pathlib import Path; write_residual_chain(Path(sys.argv[2]), int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", write,
                    str(ROOT / "bench"), str(work), str(chain_nodes)], check=True)
    import onnx  # only for the package's own test data folder

    light = Path(onnx.__file__).parent / "backend/test/data/light"
    return sorted((work / "fixtures").glob("*.onnx")) + sorted(light.glob("*.onnx")) + [
        work / f"residual_chain_{chain_nodes}.onnx"]


def outputs(files: list[Path], work: Path, only: str | None) -> dict[str, bytes]:
    result = {}
    for path in files:
        if only and only not in path.name:
            continue
        for fmt in ("json", "text"):
            run = subprocess.run(["archlint", str(path), "--format", fmt, "--color", "never"],
                                 check=False, capture_output=True, cwd=path.parent)
            result[f"{path.name}.{fmt}"] = (b"rc=%d\n" % run.returncode + run.stdout).replace(str(work).encode(), b"<WORK>")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["save", "check"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--chain", type=int, default=30000, help="nodes of the synthetic chain")
    parser.add_argument("--only", help="only the files whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = model_files(Path(tmp), args.chain)
        got = outputs(files, Path(tmp), args.only)
    if args.mode == "save":
        args.directory.mkdir(parents=True, exist_ok=True)
        for name, data in got.items():
            (args.directory / name).write_bytes(data)
        print(f"saved {len(got)} outputs under {args.directory}")
        return 0
    bad = [name for name, data in got.items()
           if not (args.directory / name).exists() or (args.directory / name).read_bytes() != data]
    for name in bad:
        print(f"differs: {name}")
    print(f"{len(got) - len(bad)}/{len(got)} outputs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
