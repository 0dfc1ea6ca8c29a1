"""Where a model file sits in its project: the project root, the folders its imports resolve
from, and the dotted name it is imported under. Reads the file system only (no torch).

* The root is found as pytest's rootdir and ruff's project discovery find it: the nearest folder
  at or above the file holding ``pyproject.toml``, ``setup.cfg``, ``setup.py`` or ``.git``.
* A file inside a package (a chain of folders with ``__init__.py``) is imported under its dotted
  name (``pkg.models.net``), with the folder above the outermost package on ``sys.path``, so that
  relative imports work, as ``python -c "import pkg.models.net"`` run there would.
* The import roots are, in order: that folder (or the file's own folder), ``[tool.archlint]
  pythonpath``, the project root and its ``src/`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", ".git")


@dataclass(frozen=True)
class ImportPlan:
    #: The dotted module name inside its package, or None for a file outside any package.
    module_name: str | None
    #: Folders put first on ``sys.path`` while the file is imported, in order.
    import_roots: tuple[Path, ...]
    project_root: Path | None


def find_project_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` with a root marker, else None."""
    path = path.resolve()
    start = path if path.is_dir() else path.parent
    for folder in [start, *start.parents]:
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return None


def package_name(path: Path) -> tuple[Path, str | None]:
    """``(base folder, dotted name)`` of a file inside a package chain; ``(its folder, None)``
    when its folder is no package (or a name on the way is not an identifier)."""
    path = path.resolve()
    folder = path.parent
    parts: list[str] = [] if path.stem == "__init__" else [path.stem]
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts or folder == path.parent or not all(p.isidentifier() for p in parts):
        return path.parent, None
    return folder, ".".join(parts)


def import_plan(path: Path, pythonpath: tuple[Path, ...] = ()) -> ImportPlan:
    base, dotted = package_name(path)
    root = find_project_root(path)
    roots = [base, *pythonpath]
    if root is not None:
        roots.append(root)
        if (root / "src").is_dir():
            roots.append(root / "src")
    unique = tuple(dict.fromkeys(p.resolve() for p in roots))
    return ImportPlan(module_name=dotted, import_roots=unique, project_root=root)
