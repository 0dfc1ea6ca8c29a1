"""Rule discovery through the ``archlint.rules`` entry-point group.

Built-in rules go through the same group as third-party ones: there is no private door.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from archlint.rule import Rule

GROUP = "archlint.rules"


class RuleLoadError(Exception):
    pass


@lru_cache(maxsize=1)
def all_rules() -> tuple[Rule, ...]:
    """Every registered rule, sorted by code. Raises RuleLoadError on a broken plugin."""
    rules: dict[str, Rule] = {}
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must name itself, not crash archlint
            raise RuleLoadError(f"rule plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not isinstance(obj, Rule):
            raise RuleLoadError(
                f"rule plugin {ep.name!r} ({ep.value}) is not an archlint.rule.Rule "
                "(decorate its check with @archlint.rule.rule)"
            )
        if obj.id != ep.name:
            raise RuleLoadError(f"entry point {ep.name!r} names rule {obj.id!r}; they must match")
        if obj.id in rules:
            raise RuleLoadError(f"rule id {obj.id!r} is registered twice")
        rules[obj.id] = obj
    return tuple(sorted(rules.values(), key=lambda r: (r.code, r.id)))


def rule_by_id(rule_id: str) -> Rule | None:
    for r in all_rules():
        if r.id == rule_id or r.code == rule_id:
            return r
    return None


def select_rules(
    rules: tuple[Rule, ...],
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    extend_select: list[str] | None = None,
) -> list[Rule]:
    """Apply ruff-style selection. Each entry is a rule id, a code, a code prefix, or ``ALL``.

    ``select`` replaces the default set (default_enabled rules); ``extend_select`` adds to it;
    ``ignore`` removes. Unknown selectors raise ValueError (a usage error, exit 2).
    """

    def matches(r: Rule, sel: str) -> bool:
        return sel == "ALL" or sel == r.id or r.code.startswith(sel)

    for sel in [*(select or []), *(ignore or []), *(extend_select or [])]:
        if not any(matches(r, sel) for r in rules):
            from archlint.suggest import did_you_mean

            hint = did_you_mean(sel, [n for r in rules for n in (r.id, r.code)])
            raise ValueError(f"unknown rule selector {sel!r}{hint} (see 'archlint rules')")
    if select:
        chosen = [r for r in rules if any(matches(r, s) for s in select)]
    else:
        chosen = [r for r in rules if r.default_enabled]
    for s in extend_select or []:
        chosen += [r for r in rules if matches(r, s) and r not in chosen]
    return [r for r in chosen if not any(matches(r, s) for s in ignore or [])]
