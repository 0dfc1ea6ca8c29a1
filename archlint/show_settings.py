"""``archlint --show-settings PATH...``: what each target gets, without linting it (as ruff's
``--show-settings``): the ``[tool.archlint]`` that applies, the project root, the dotted name it is
imported under, its import roots, and the settings in effect."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from archlint.config import Options
from archlint.project import import_plan
from archlint.targets import expand_targets


def show_settings(paths: list[str], args: argparse.Namespace,
                  options_for: Callable[[str, argparse.Namespace], Options]) -> int:
    """For each target: the config it uses, how it is imported, and the settings that apply
    (``options_for(path, args)`` gives them, as the lint would)."""

    expansion = expand_targets(paths, skip_non_models=args.skip_non_models)
    for f in expansion.files:
        opts = options_for(str(f), args)
        print(f"{f}:")
        print(f"  config: {opts.config_file or '(none found: defaults)'}")
        if f.suffix.lower() == ".py":
            plan = import_plan(f, opts.import_roots())
            print(f"  project root: {plan.project_root or '(none found)'}")
            print(f"  imported as: {plan.module_name or '(a standalone file)'}")
            print(f"  import roots: {', '.join(str(r) for r in plan.import_roots)}")
            models = (opts.model,) if opts.model else opts.models_for(f)
            if models:
                print(f"  models: {', '.join(models)}")
        for name in ("select", "extend_select", "ignore", "fail_on", "input_shapes",
                     "sizes_range", "timeout"):
            value = getattr(opts, name)
            if value not in (None, ()):
                print(f"  {name.replace('_', '-')}: {_setting(value)}")
        ignored = sorted(opts.ignored_for(str(f)) - set(opts.ignore))
        if ignored:
            print(f"  per-file-ignores: {', '.join(ignored)}")
    for problem in expansion.problems:
        print(f"{problem.path}: {problem.reason}", file=sys.stderr)
    return 2 if expansion.problems else 0


def _setting(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return " ".join(",".join(str(d) for d in v) for v in value)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
