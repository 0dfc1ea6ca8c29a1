"""archlint's built-in rules, one module per rule id (installed as ``archlint_rules``).

Each is registered through the ``archlint.rules`` entry-point group, like any plugin.
"""
