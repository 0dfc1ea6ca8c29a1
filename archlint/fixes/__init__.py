"""Autofix: ``archlint --fix``, ``--diff`` and ``--unsafe-fixes``.

- ``model``: what a rule declares (:class:`Fix`: edits to a construction call + applicability).
- ``codemod``: the libcst edit of one call's arguments, or the reason it can't be made.
- ``engine``: choosing, applying, re-linting, rolling back, the diff and the summary.

Only ``model`` is imported by rules; libcst loads when a fix is applied.
"""

from archlint.fixes.model import Applicability, CallEdit, Fix, call_fix, per_axis, source_fix

__all__ = ["Applicability", "CallEdit", "Fix", "call_fix", "per_axis", "source_fix"]
