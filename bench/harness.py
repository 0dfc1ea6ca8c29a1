"""The benchmark harness shared by every script in bench/.

Method: each contestant is a whole process (``python ...``), started the way a user would start
it. For every run we record its wall time and its own peak resident set size (``ru_maxrss`` of
that child, read with ``os.wait4``, so one child's peak never leaks into another's). Contestants
are interleaved run by run, and their order alternates, so a slow stretch of a noisy machine hits
both. We report the median with the min-max spread, and ratios taken run by run (contestant A's
run i against contestant B's run i), again as median and spread.

Nothing here imports torch or archlint: the parent stays small and never warms a cache for a child.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: archlint exits 0 (clean) or 1 (findings); 2 means a target could not be analyzed.
ARCHLINT_OK = (0, 1)


class BenchError(Exception):
    """A contestant failed (bad exit status, timeout): the benchmark cannot give a figure."""


# --- one process -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One run of one process."""

    wall_s: float
    cpu_s: float  # user + system: steadier than wall time on a busy machine
    maxrss_mib: float
    returncode: int
    stdout: str
    stderr: str


#: GNU time reports the peak RSS of the child it runs, from a process of ~2 MiB.
GNU_TIME = "/usr/bin/time"


def gnu_time_available() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    probe = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stderr.strip().isdigit()


def run_process(cmd: Sequence[str], *, timeout_s: float = 300.0, cwd: Path = REPO,
                env: dict[str, str] | None = None) -> Sample:
    """Run ``cmd`` to completion: wall time from spawn to reap, the child's own peak RSS.

    Why not ``os.wait4`` on a child of this process: Linux starts a child's ``ru_maxrss`` at the
    high-water mark of the memory it was forked from, so every child would seem to use at least
    as much as the harness. GNU time, itself tiny, runs the child and reports its real peak; only
    without it do we fall back to wait4, and then the harness's own peak is a floor (kept small:
    the harness imports nothing heavy). Output goes to files, not pipes, so a chatty child never
    blocks while we wait.
    """
    with tempfile.TemporaryDirectory(prefix="archlint-bench-run-") as tmp:
        usage_file = Path(tmp) / "usage"
        full = list(cmd)
        if _USE_GNU_TIME:
            full = [GNU_TIME, "-f", "%M %U %S", "-o", str(usage_file), *full]
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(full, stdout=out, stderr=err, cwd=cwd, env=env,
                                    start_new_session=True)
            status, usage = _wait_with_timeout(proc, timeout_s, cmd)
            wall = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        returncode = os.waitstatus_to_exitcode(status)
        if _USE_GNU_TIME:
            maxrss_kib, cpu_s = _parse_gnu_time(usage_file.read_text())
        else:
            maxrss_kib, cpu_s = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    return Sample(wall, cpu_s, maxrss_kib / 1024.0, returncode, stdout, stderr)


def _parse_gnu_time(text: str) -> tuple[float, float]:
    # The last line is our format; a line before it may say "Command exited with non-zero status".
    maxrss, user, system = text.strip().splitlines()[-1].split()
    return float(maxrss), float(user) + float(system)


def _wait_with_timeout(proc: subprocess.Popen, timeout_s: float, cmd: Sequence[str]):
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole session: time and its child
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise BenchError(f"timed out after {timeout_s:g}s: {shell_line(cmd)}")
        time.sleep(0.002)


_USE_GNU_TIME = gnu_time_available()


def checked(sample: Sample, cmd: Sequence[str], ok: Iterable[int] = (0,)) -> Sample:
    """``sample``, or BenchError naming the command and its last stderr line."""
    if sample.returncode in tuple(ok):
        return sample
    # archlint's JSON carries a target's error on stdout; anything else speaks on stderr.
    lines = [line.strip() for line in sample.stderr.splitlines() if line.strip()][-3:]
    lines += [line.strip() for line in sample.stdout.splitlines()
              if '"error"' in line and "null" not in line][:2]
    raise BenchError(f"exit {sample.returncode}: {shell_line(cmd)}: " + " | ".join(lines))


def shell_line(cmd: Sequence[str]) -> str:
    """The command as one readable line (an inline ``-c`` program shows as ``<program>``)."""
    parts = ["python" if c == PYTHON else ("<program>" if "\n" in c else c) for c in cmd]
    return " ".join(p if re.fullmatch(r"[\w@%+=:,./-]+", p) else repr(p) for p in parts)


# --- several contestants, interleaved --------------------------------------------------------


@dataclass
class Contestant:
    name: str
    cmd: list[str]
    ok: tuple[int, ...] = (0,)
    timeout_s: float = 300.0
    samples: list[Sample] = field(default_factory=list)
    #: Why this contestant stopped being measured (a failed or timed-out run), else None.
    error: str | None = None

    def times(self) -> list[float]:
        return [s.wall_s for s in self.samples]

    def cpu(self) -> list[float]:
        return [s.cpu_s for s in self.samples]

    def rss(self) -> list[float]:
        return [s.maxrss_mib for s in self.samples]


def interleave(contestants: Sequence[Contestant], runs: int, warmup: int = 1,
               progress: Callable[[str], None] | None = None) -> None:
    """Run every contestant ``warmup + runs`` times, alternating order; keep the measured runs.

    The warm-up run fills the OS file cache (torch's shared libraries, the .pyc files) for every
    contestant alike, and checks each command works before we spend time measuring. A contestant
    whose run fails gets its ``error`` set and is not run again; the others go on.
    """
    compile_bytecode()
    for i in range(warmup + runs):
        order = list(contestants) if i % 2 == 0 else list(reversed(contestants))
        for c in order:
            if c.error is not None:
                continue
            if progress:
                label = i + 1 - warmup if i >= warmup else "warm-up"
                progress(f"  run {label}: {c.name}")
            try:
                sample = checked(run_process(c.cmd, timeout_s=c.timeout_s), c.cmd, c.ok)
            except BenchError as exc:
                c.error = str(exc)
                continue
            if i >= warmup:
                c.samples.append(sample)


_COMPILED = False


def compile_bytecode() -> None:
    """Write archlint's .pyc files once, as ``pip install`` does for every package (onnx's, the
    floor's, are there). Where PYTHONDONTWRITEBYTECODE is set (a sandbox, some CI images), an
    editable archlint would otherwise compile its ~80 modules from source in every measured run
    (~0.1 s a process) while the floor never does. Python reads existing .pyc files either way."""
    global _COMPILED
    if not _COMPILED:
        subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "archlint"), str(REPO / "rules")],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _COMPILED = True


def first_error(contestants: Sequence[Contestant]) -> BenchError | None:
    errors = [c.error for c in contestants if c.error is not None]
    return BenchError(errors[0]) if errors else None


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, unit: str = "", digits: int = 2) -> str:
        if self.low == self.high:
            return f"{self.median:.{digits}f}{unit}"
        return (f"{self.median:.{digits}f}{unit} "
                f"[{self.low:.{digits}f}-{self.high:.{digits}f}]")


def describe(c: Contestant) -> str:
    """One line per contestant: wall time, CPU time and peak RSS, each as median [min-max]."""
    if c.error is not None or not c.samples:
        return f"{c.name}: {c.error or 'no runs'}"
    return (f"{c.name}: wall {Spread.of(c.times()).fmt(' s')}, cpu {Spread.of(c.cpu()).fmt(' s')}, "
            f"peak RSS {Spread.of(c.rss()).fmt(' MiB', 0)}")


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Run-by-run ratios of two interleaved contestants: median and spread."""
    if len(numerators) != len(denominators):
        raise ValueError("contestants have different numbers of runs")
    return Spread.of([n / d for n, d in zip(numerators, denominators)])


# --- results and the table -------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: a measured figure and, when there is one, its target."""

    bench: str
    case: str
    archlint: str
    peer: str = "-"
    ratio: str = "-"
    target: str = "-"
    verdict: str = "-"  # "holds", "MISSED", "-" (no target), "error"
    command: str = ""


def verdict(holds: bool) -> str:
    return "holds" if holds else "MISSED"


COLUMNS = ("bench", "case", "archlint", "peer", "ratio", "target", "verdict")


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    cells = [list(COLUMNS)] + [[str(getattr(r, c)) for c in COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line() -> str:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    return (f"python {platform.python_version()}, torch {version('torch')}, "
            f"onnx {version('onnx')}, torchinfo {version('torchinfo')}, "
            f"{os.cpu_count()} CPUs, {platform.machine()} {platform.system()}; peak RSS by "
            + ("GNU time" if _USE_GNU_TIME else "wait4 (floor: the harness's own peak)"))


# --- command line shared by every script -----------------------------------------------------


def base_parser(description: str, default_runs: int, quick_runs: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=None,
                        help=f"measured runs per contestant (default {default_runs}, "
                        f"{quick_runs} with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller cases")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed (default: report only)")
    parser.set_defaults(default_runs=default_runs, quick_runs=quick_runs)
    return parser


def runs_of(args: argparse.Namespace) -> int:
    if args.runs is not None:
        if args.runs < 1:
            raise SystemExit("--runs must be at least 1")
        return args.runs
    return args.quick_runs if args.quick else args.default_runs


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(rows: Sequence[Row], args: argparse.Namespace, details: Sequence[str] = ()) -> int:
    """Print details and the table; write JSON if asked; the exit status for ``--check``."""
    print(machine_line())
    for line in details:
        print(line)
    print()
    print(format_table(rows, markdown=args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    missed = [r for r in rows if r.verdict in ("MISSED", "error")]
    if missed:
        print(f"\n{len(missed)} target(s) missed or errored: "
              + "; ".join(f"{r.bench} {r.case}" for r in missed))
    return 1 if args.check and missed else 0


def error_row(bench: str, case: str, exc: Exception) -> Row:
    return Row(bench=bench, case=case, archlint=f"error: {exc}"[:200], verdict="error")


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 224,1024: {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def archlint_cmd(*args: str) -> list[str]:
    """archlint as a user runs it (``python -m archlint`` is the console script's entry)."""
    return [PYTHON, "-m", "archlint", *args]
