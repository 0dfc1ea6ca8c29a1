"""The text report on a real terminal: a pseudo-terminal of a fixed size (80x40).

Wrapping at the terminal width with a hanging indent, ``--output-format concise``, each target
printed as soon as it is done, Ctrl-C (what finished, then "interrupted", exit 130), ``--color``
with NO_COLOR / FORCE_COLOR, and the progress bar naming the current file.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SLOW_MODEL = """\
import pathlib, time
pathlib.Path(__file__).with_suffix(".started").touch()  # the targets before it are done
time.sleep({seconds})
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "CI", "GITHUB_ACTIONS")}
    env.update(TERM="xterm-256color", **extra)
    return env


class PtyRun:
    """archlint on a pseudo-terminal of ``cols`` columns; ``chunks`` are (time, text) as read."""

    def __init__(self, *args: str, cols: int = 80, env: dict[str, str] | None = None):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "archlint", *args], cwd=ROOT,
                                     stdin=slave, stdout=slave, stderr=slave, env=env or _env())
        os.close(slave)
        self.master = master
        self.chunks: list[tuple[float, str]] = []
        self.start = time.monotonic()

    def read_until(self, predicate, timeout: float = 120) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.text):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    return predicate(self.text)
                if not data:
                    return predicate(self.text)
                self.chunks.append((time.monotonic() - self.start, data.decode("utf-8", "replace")))
        return predicate(self.text)

    def finish(self, timeout: float = 120) -> int:
        self.read_until(lambda _: False if self.proc.poll() is None else True, timeout)
        self.read_until(lambda _: False, 0.5)  # drain
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code

    @property
    def text(self) -> str:
        return "".join(c for _, c in self.chunks).replace("\r\n", "\n")

    @property
    def plain(self) -> str:
        return ANSI.sub("", self.text)


def _pipe(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archlint", *args], cwd=ROOT, capture_output=True,
                          text=True, env=_env(**env))


def _has_color(text: str) -> bool:
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        codes = [int(p) for p in params.split(";") if p]
        if any(30 <= c <= 38 or 90 <= c <= 97 for c in codes):
            return True
    return False


def test_findings_wrap_at_the_terminal_width_with_a_hanging_indent():
    whole = _pipe("examples/segmenter.py", "--color", "never").stdout.splitlines()
    run = PtyRun("examples/segmenter.py")
    assert run.finish() == 1
    lines = run.plain.splitlines()
    assert max(len(line) for line in lines) <= 80
    heads = [line for line in whole if line.startswith("  examples/segmenter.py:")]
    assert len(heads) == 4 and all(len(h) > 80 for h in heads)
    for head in heads:
        i = next(k for k, line in enumerate(lines)
                 if line.startswith("  examples/") and head.startswith(line.rstrip()))
        wrapped = [lines[i]]
        for line in lines[i + 1:]:
            if not line.startswith("      ") or line.startswith("      fix:") or line.startswith("      sizes:"):
                break
            assert line[6] != " " and len(line) - len(line.lstrip()) == 6  # the hanging indent
            wrapped.append(line.strip())
        assert len(wrapped) > 1
        # cut between words only: the pieces joined by single spaces give the whole line back
        assert " ".join(w.rstrip() for w in wrapped) == head


def test_concise_is_one_line_per_finding():
    out = _pipe("examples/segmenter.py", "--output-format", "concise").stdout.splitlines()
    assert out[-1] == "Found 1 error, 3 warnings in 1 model"
    findings = out[:-1]
    assert len(findings) == 4
    for line in findings:
        assert re.fullmatch(r"examples/segmenter\.py:\d+: AL\d{3} \S.*", line), line



def test_concise_does_not_wrap_on_a_terminal(tmp_path):
    bad = _bad_onnx(tmp_path / "bad.onnx")
    out = _pipe(bad, "--output-format", "concise").stdout.splitlines()
    assert any(len(line) > 80 for line in out)
    run = PtyRun(bad, "--output-format", "concise", env=_env(NO_COLOR="1"))
    assert run.finish() == 1
    assert [line for line in run.plain.splitlines() if line.strip()] == out


def test_each_target_prints_as_soon_as_it_is_done(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL.format(seconds=6))
    run = PtyRun("examples/segmenter.py", str(slow), "--no-progress")
    assert run.read_until(lambda t: "Found" in t or "AL101" in t, timeout=120)
    shown_at = time.monotonic() - run.start
    assert "Found" not in run.text  # the summary waits for the slow target...
    assert run.proc.poll() is None  # ...which is still being imported
    assert run.finish() == 1
    assert time.monotonic() - run.start - shown_at >= 3


def test_ctrl_c_prints_what_finished_then_interrupted(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL.format(seconds=300))
    run = PtyRun("examples/segmenter.py", str(slow), "--no-progress")
    assert run.read_until(lambda t: "AL101" in t, timeout=120)
    time.sleep(0.5)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=30) == 130
    text = run.plain
    assert "examples/segmenter.py (Segmenter)" in text and "AL208" in text
    assert "Found 1 error, 3 warnings in 1 model" in text
    assert text.rstrip().endswith("interrupted")
    assert "Traceback" not in text


def test_json_after_ctrl_c_holds_the_finished_targets(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL.format(seconds=300))
    proc = subprocess.Popen([sys.executable, "-m", "archlint", "examples/segmenter.py", str(slow),
                             "--format", "json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 120
    while not slow.with_suffix(".started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    import json

    data = json.loads(stdout)
    assert [m["target"] for m in data["models"]] == ["examples/segmenter.py"]
    assert stderr.strip().endswith("interrupted")


def _bad_onnx(path: Path) -> str:
    """A two-finding ONNX file (an odd size into a stride-2 conv, a 3x3 stride-2 transposed
    conv): the ONNX path never imports torch, so these runs take a second, not ten."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["down"], name="down", strides=[2, 2]),
             helper.make_node("ConvTranspose", ["down", "w"], ["up"], name="up", strides=[2, 2])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("up", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_color_auto_always_never_and_the_environment(tmp_path):
    bad = _bad_onnx(tmp_path / "bad.onnx")
    assert _has_color(PtyRun_text(bad))
    never = PtyRun_text(bad, "--color", "never")
    assert "AL102" in never and "\x1b[" not in never
    assert not _has_color(PtyRun_text(bad, env=_env(NO_COLOR="1")))
    plain = _pipe(bad).stdout
    assert not _has_color(plain)
    always = _pipe(bad, "--color", "always").stdout
    assert _has_color(always)
    assert _has_color(_pipe(bad, FORCE_COLOR="1").stdout)
    assert not _has_color(_pipe(bad, "--color", "never", FORCE_COLOR="1").stdout)
    # forced colors on a pipe still keep each finding on one line
    assert ANSI.sub("", always) == plain


def PtyRun_text(*args: str, env: dict[str, str] | None = None) -> str:
    run = PtyRun(*args, env=env)
    run.finish()
    return run.text


def test_progress_bar_names_the_current_file(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL.format(seconds=4))
    run = PtyRun("examples/segmenter.py", str(slow), cols=160)
    assert run.finish() == 1
    # frames are separated by cursor moves and line erases; styles are dropped
    redraws = re.sub(r"\x1b\[[0-9;?]*[ABGHJKhl]|\r", "\n", run.text)
    frames = [line for line in ANSI.sub("", redraws).splitlines() if "linting" in line]
    assert any("slow.py" in f and "1/2" in f for f in frames), frames[-5:]


def test_sizes_help_shows_only_its_own_options():
    out = _pipe("sizes", "--help").stdout
    assert "archlint sizes" in out and "--input-shape" in out and "--sizes-range" in out
    for foreign in ("--select", "--ignore", "--fail-on", "--confirm", "--show", "--statistics",
                    "--exit-zero", "--format {text,full"):
        assert foreign not in out, foreign


def test_statistics_still_reports_failed_targets(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch.nn as nn\nclass Net(nn.Module)\n")
    proc = _pipe("examples/segmenter.py", str(broken), "--statistics")
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert any(line.split()[:2] == ["1", "AL101"] for line in lines)
    assert lines[-1].split()[:2] == ["1", "error"] and "broken.py" in lines[-1]


def test_layer_summary_fits_the_terminal_and_keeps_names_whole():
    run = PtyRun("examples/segmenter.py", "--show", "layers", cols=100, env=_env(NO_COLOR="1"))
    assert run.finish() == 1
    lines = run.plain.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name "))
    table = lines[start:next(i for i, line in enumerate(lines) if line.startswith("Total params"))]
    assert max(len(line) for line in table) <= 100
    names = {line.split()[0] for line in table[1:] if line[:1].strip()}
    # module-path names, never cut to 'ste…'
    assert {"stem.0", "stem.2", "body.0", "up", "quality"} <= names
    assert not any("\u2026" in line for line in table)
    assert any(line.startswith("\u2717 cat") for line in table)  # the failing op
