"""Options for one run: ``[tool.archlint]`` in pyproject.toml, overridden by the CLI or API.

Recognised keys in ``[tool.archlint]``::

    select = ["skip-connection-mismatch", "AL1"]    # replaces the default set
    extend-select = ["large-dense-head"]
    ignore = ["pool-drops-border"]
    per-file-ignores = { "models/legacy_*.py" = ["hardcoded-flatten"] }
    fail-on = "warning"                              # error | warning | info
    input-shape = [1, 3, 224, 224]                   # or a list of shapes
    models = ["models/unet.py", "models/net.py::Net(width=64)"]   # which model, built how
    pythonpath = ["src", "third_party"]             # import roots, as pytest's pythonpath
    sizes-range = [1, 4096]

Each target uses the nearest pyproject.toml above it that has a ``[tool.archlint]`` table (as
ruff does); paths in it are relative to that file's folder.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from archlint.suggest import did_you_mean


class ConfigError(Exception):
    """A bad option or config value: a one-line reason, exit 2."""


@dataclass(frozen=True)
class Options:
    model: str | None = None
    input_shapes: tuple[tuple[int, ...], ...] | None = None
    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_file_ignores: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fail_on: str = "warning"
    sizes_range: tuple[int, int] = (1, 4096)
    #: Seconds allowed to import and capture one target (None: no limit).
    timeout: float | None = None
    confirm: bool = False
    device: str = "cpu"
    models: tuple[str, ...] = ()
    #: Extra import roots (relative to the config file's folder), as pytest's ``pythonpath``.
    pythonpath: tuple[str, ...] = ()
    #: Where the config came from, for messages.
    config_file: str | None = None

    def merged(self, **overrides: Any) -> "Options":
        """A copy with every non-None override applied (CLI beats config)."""
        known = {f.name for f in fields(self)}
        bad = set(overrides) - known
        if bad:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(bad))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "input_shapes" in given:  # the API takes shapes unparsed: check them as the CLI does
            given["input_shapes"] = tuple(
                check_shape(tuple(int(d) for d in s), f"input shape {tuple(s)}")
                for s in given["input_shapes"]
            )
        return replace(self, **given)

    @property
    def config_dir(self) -> Path | None:
        return Path(self.config_file).resolve().parent if self.config_file else None

    def import_roots(self) -> tuple[Path, ...]:
        """``pythonpath`` as absolute folders."""
        base = self.config_dir or Path.cwd()
        return tuple((base / p).resolve() for p in self.pythonpath)

    def models_for(self, path: str | Path) -> tuple[str, ...]:
        """The model specs ``models`` gives for this file ("net.py::Net(width=64)" -> "Net(width=64)")."""
        base = self.config_dir or Path.cwd()
        here = os.path.realpath(path)
        specs = []
        for entry in self.models:
            file, sep, spec = entry.partition("::")
            if sep and spec and os.path.realpath(base / file) == here:
                specs.append(spec)
        return tuple(specs)

    def ignored_for(self, path: str | None) -> set[str]:
        out = set(self.ignore)
        if path is None:
            return out
        spellings = {path, Path(path).name}
        if self.config_file is not None:  # patterns are relative to the pyproject.toml's folder
            try:
                root = Path(self.config_file).resolve().parent
                spellings.add(Path(path).resolve().relative_to(root).as_posix())
            except ValueError:
                pass  # a target outside the project
        for pattern, ids in self.per_file_ignores.items():
            if any(fnmatch.fnmatch(spelled, pattern) for spelled in spellings):
                out.update(ids)
        return out


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' (or 1x3x224x224) -> (1, 3, 224, 224); ConfigError on anything else."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        dims = tuple(int(p) for p in parts)  # an empty field ("1,3,,") is an error too
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected integers like 1,3,224,224") from None
    return check_shape(dims, f"--input-shape {text!r}")


def check_shape(dims: tuple[int, ...], what: str) -> tuple[int, ...]:
    if not dims:
        raise ConfigError(f"{what}: empty shape")
    if any(d <= 0 for d in dims):
        raise ConfigError(f"{what}: every dimension must be a positive integer")
    return dims


@dataclass(frozen=True)
class ModelSpec:
    """Which model in a file, and its constructor arguments: ``Net``, ``Net(3, num_classes=10)``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    called: bool = False  # written with parentheses: build it with exactly these arguments
    text: str = ""


def parse_model_spec(text: str, what: str = "--model") -> ModelSpec:
    """``"Net(3, num_classes=10)"`` -> ModelSpec. Arguments must be literals: they are read with
    :func:`ast.literal_eval`, never evaluated."""
    usage = f"{what} {text!r}: expected NAME or NAME(literal arguments), like Net(3, num_classes=10)"
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(usage) from None
    call = tree if isinstance(tree, ast.Call) else None
    name = _dotted_name(call.func if call else tree)
    if name is None:
        raise ConfigError(usage)
    if call is None:
        return ModelSpec(name, text=text.strip())
    args, kwargs = [], []
    for node in [*call.args, *call.keywords]:
        value = node.value if isinstance(node, ast.keyword) else node
        if isinstance(node, ast.Starred) or (isinstance(node, ast.keyword) and node.arg is None):
            raise ConfigError(f"{what} {text!r}: *args and **kwargs cannot be given; "
                              "write each argument out")
        try:
            literal = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ConfigError(
                f"{what} {text!r}: {ast.unparse(value)} is not a literal; arguments must be "
                "numbers, strings, True/False/None, or tuples, lists and dicts of them"
            ) from None
        if isinstance(node, ast.keyword):
            kwargs.append((node.arg, literal))
        else:
            args.append(literal)
    return ModelSpec(name, tuple(args), tuple(kwargs), called=True, text=text.strip())


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def find_pyproject(start: Path) -> Path | None:
    start = start.resolve()
    for d in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def find_config(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.archlint]`` table
    (ruff's rule: a pyproject.toml without the table does not stop the search)."""
    start = start.resolve()
    for d in [start, *start.parents] if start.is_dir() else [start.parent, *start.parent.parents]:
        candidate = d / "pyproject.toml"
        if candidate.is_file() and _has_archlint_table(candidate):
            return candidate
    return None


def _has_archlint_table(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True  # unreadable: load_config gives the reason
    if "archlint" not in text:
        return False
    try:
        return "archlint" in tomllib.loads(text).get("tool", {})
    except tomllib.TOMLDecodeError:
        return True  # broken: load_config gives the reason


_KEYS = {
    "select": "select",
    "extend-select": "extend_select",
    "ignore": "ignore",
    "per-file-ignores": "per_file_ignores",
    "fail-on": "fail_on",
    "input-shape": "input_shapes",
    "sizes-range": "sizes_range",
    "timeout": "timeout",
    "models": "models",
    "device": "device",
    "pythonpath": "pythonpath",
}


def load_config(start: Path | None = None, path: Path | None = None) -> Options:
    """Options from ``[tool.archlint]`` of the nearest pyproject.toml that has one (or ``path``)."""
    pyproject = path if path is not None else find_config(start or Path.cwd())
    if pyproject is None:
        return Options()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read config: {exc}") from None
    table = data.get("tool", {}).get("archlint", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.archlint] must be a table")
    values: dict[str, Any] = {"config_file": str(pyproject)}
    for key, value in table.items():
        if key not in _KEYS:
            raise ConfigError(f"{pyproject}: unknown key {key!r} in [tool.archlint]"
                              + did_you_mean(key, _KEYS, what="known keys"))
        values[_KEYS[key]] = _convert(_KEYS[key], value, f"{pyproject}: [tool.archlint] {key}")
    return Options(**values)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{what} must be a list of strings")
    return tuple(value)


def _convert(name: str, value: Any, what: str) -> Any:
    """Check one ``[tool.archlint]`` value; ``what`` names it for the one-line error."""
    if name in ("select", "extend_select", "ignore", "pythonpath"):
        return _strings(value, what)
    if name == "models":
        entries = _strings(value, what)
        for entry in entries:
            file, sep, spec = entry.partition("::")
            if sep:
                parse_model_spec(spec, f"{what} entry {file}::")
        return entries
    if name == "per_file_ignores":
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a table of pattern = [ids]")
        return {k: _strings(v, f"{what} {k!r}") for k, v in value.items()}
    if name == "input_shapes":
        shapes = value if value and isinstance(value[0], list) else [value]
        if not all(isinstance(s, list) and all(isinstance(d, int) for d in s) for s in shapes):
            raise ConfigError(f"{what} must be a list of integers, or a list of such lists")
        return tuple(check_shape(tuple(s), what) for s in shapes)
    if name == "sizes_range":
        if not (isinstance(value, list) and len(value) == 2
                and all(type(v) is int for v in value) and 1 <= value[0] <= value[1]):
            raise ConfigError(f"{what} must be [lo, hi] with 1 <= lo <= hi")
        return (int(value[0]), int(value[1]))
    if name == "fail_on":
        if value not in ("error", "warning", "info"):
            raise ConfigError(f"{what} must be one of error, warning, info")
        return value
    if name == "timeout":
        if not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{what} must be a positive number of seconds")
        return float(value)
    return value
