"""Turn the CLI's PATH arguments into the files to lint.

* an explicit file is always linted (its frontend explains why it has no model), except that
  ``skip_non_models`` (the pre-commit hook) drops a ``.py`` without an ``nn.Module`` silently;
* a directory is walked: ``.onnx`` files, and ``.py`` files that the AST pre-filter says may
  define a model; hidden folders, virtual environments and caches are skipped;
* a glob (``models/**/*.py``) expands like a directory walk over its matches.

Nothing here imports torch: the pre-filter reads source text only.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MODEL_SUFFIXES = (".py", ".onnx")
#: Folder names never worth walking into.
SKIPPED_DIRS = frozenset(
    {"__pycache__", "site-packages", "dist-packages", "node_modules", "venv", "build"}
)


@dataclass(frozen=True)
class Unusable:
    """A PATH argument (or something under it) that cannot be linted: exit 2."""

    path: str
    reason: str


@dataclass
class Expansion:
    files: list[Path] = field(default_factory=list)
    problems: list[Unusable] = field(default_factory=list)
    #: The files named one by one (not found by a folder walk or a glob).
    named: set[Path] = field(default_factory=set)


def expand_targets(args: list[str], *, skip_non_models: bool = False) -> Expansion:
    """The files to lint for ``args``, in order, without duplicates, plus what went wrong."""
    out = Expansion()
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.files.append(path)

    for arg in args:
        path = Path(arg)
        if not _exists(path) and _is_glob(arg):
            _expand_glob(arg, add, out.problems)
        elif path.is_dir():
            found = list(_walk(path, out.problems))
            if not found and not any(p.path.startswith(arg) for p in out.problems):
                out.problems.append(
                    Unusable(arg, "no models found (no .onnx file, no .py file defining an nn.Module)")
                )
            for f in found:
                add(f)
        elif path.is_file():
            if skip_non_models and not _may_hold_model_quietly(path):
                continue
            if path.suffix.lower() not in MODEL_SUFFIXES:
                if not skip_non_models:
                    out.problems.append(Unusable(arg, "not a .py or .onnx file"))
                continue
            out.named.add(path)
            add(path)
        elif path.is_symlink():
            out.problems.append(Unusable(arg, "broken symbolic link (or a symlink loop)"))
        elif _exists(path):
            out.problems.append(Unusable(arg, "not a regular file or directory"))
        else:
            out.problems.append(Unusable(arg, "no such file or directory"))
    return out


def building_block_files(files: list[Path], named: set[Path], *, pre_commit: bool,
                         named_models: Callable[[Path], bool]) -> set[Path]:
    """The ``.py`` files that hold only building blocks (every model class needs constructor
    arguments, nothing builds one at import) and are not to be linted as models: under
    pre-commit, every such file (its users are linted when they change); in a folder walk or a
    glob, those with a class that another file of the run names (``from layers import Block``).
    A file named on the command line, or whose models ``named_models`` says the config names,
    is always linted."""
    from archlint.frontends.source import building_block_classes

    texts: dict[Path, str] = {}
    for f in files:
        if f.suffix.lower() == ".py":
            try:
                texts[f] = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                pass
    blocks = {}
    for f, text in texts.items():
        if (f in named and not pre_commit) or named_models(f):
            continue
        names = building_block_classes(text)
        if names:
            blocks[f] = names
    if pre_commit:
        return set(blocks)
    return {
        f for f, names in blocks.items()
        if any(re.search(rf"\b{re.escape(n)}\b", t) for n in names
               for g, t in texts.items() if g != f)
    }


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ELOOP, ENAMETOOLONG, EACCES on a parent
        return False


def _is_glob(arg: str) -> bool:
    return glob.has_magic(arg)


def _expand_glob(pattern: str, add, problems: list[Unusable]) -> None:
    matches = sorted(glob.glob(pattern, recursive=True))
    found = []
    for m in matches:
        path = Path(m)
        if path.is_dir():
            continue  # `models/**` also names every file below; those are listed on their own
        if _is_candidate(path, problems):
            found.append(path)
    if not found:
        what = "no file matches" if not matches else "no models among the files matching"
        problems.append(Unusable(pattern, what + " this pattern"))
    for path in found:
        add(path)


def _walk(root: Path, problems: list[Unusable]):
    """Model candidates under ``root``, depth first, sorted; follows symlinks once each."""
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            problems.append(Unusable(str(folder), _os_reason(exc)))
            continue
        if (st.st_dev, st.st_ino) in visited:
            continue  # a symlink loop, or a second link to a folder already walked
        visited.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(Unusable(str(folder), _os_reason(exc)))
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if not _skipped_dir(path):
                    subdirs.append(path)
            elif _is_candidate(path, problems):
                yield path
        stack.extend(reversed(subdirs))


def _skipped_dir(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name in SKIPPED_DIRS or name.endswith(".egg-info"):
        return True
    return (path / "pyvenv.cfg").exists()  # a virtual environment under any name


def _is_candidate(path: Path, problems: list[Unusable]) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return True
    if suffix != ".py":
        return False
    try:
        return _may_hold_model(path)
    except OSError as exc:
        problems.append(Unusable(str(path), _os_reason(exc)))
        return False


def _may_hold_model(path: Path) -> bool:
    """The AST pre-filter: False only when the file surely defines no nn.Module."""
    if path.suffix.lower() != ".py":
        return path.suffix.lower() == ".onnx"
    from archlint.frontends.source import defines_models

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return True  # let the frontend give the reason
    return defines_models(text)


def _may_hold_model_quietly(path: Path) -> bool:
    try:
        return _may_hold_model(path)
    except OSError:
        return True  # unreadable: linting it gives the one-line reason


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)
