"""Axis provenance through contractions: matmul, einsum, and which dims an op mixes.

Used by :mod:`archlint.passes.provenance` (the dims of the result) and by
:mod:`archlint.passes.token_fields` (``contracted``: the dims whose entries each value reads).
"""

from __future__ import annotations

import networkx as nx

from archlint.passes.provenance_dims import Dim, _broadcast, _plain


def _matmul(ins, attrs, shape) -> tuple[Dim, ...] | None:
    weight = attrs.extra.get("weight")
    if weight is not None:  # x @ W with a parameter: features replace the last dim
        a = ins[0]
        if weight["slot"] != 1 or a is None:
            return None
        return a[:-1] + (_plain(shape[-1]),)
    if len(ins) < 2 or ins[0] is None or ins[1] is None:
        return None
    a, b = ins[0], ins[1]
    if len(a) < 2 or len(b) < 2:
        return None
    batch = _broadcast([a[:-2], b[:-2]], shape[:-2]) if len(shape) > 2 else ()
    if batch is None:
        return None
    return tuple(batch) + (a[-2], b[-1])


def parse_einsum(equation: str, ranks: list[int]) -> tuple[list[str], str] | None:
    """Operand subscripts and the output subscripts, with ``...`` expanded to capitals."""
    if "->" in equation:
        lhs, rhs = equation.split("->")
    else:
        lhs = equation
        letters = lhs.replace(",", "").replace(".", "")
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return None
    ell_rank = 0
    for t, r in zip(terms, ranks):
        if "..." in t:
            ell_rank = max(ell_rank, r - len(t.replace("...", "")))
    ell = "".join(chr(ord("A") + i) for i in range(ell_rank))
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - len(t.replace("...", ""))
            t = t.replace("...", ell[ell_rank - n:])
        out_terms.append(t)
    return out_terms, rhs.replace("...", ell)


def _einsum(ins, attrs, shape) -> tuple[Dim, ...] | None:
    operands = attrs.extra["operands"]
    acts = iter(ins)
    per_operand: list[tuple[Dim, ...] | None] = []
    ranks = []
    for kind in operands:
        if kind == "act":
            dims = next(acts, None)
            if dims is None:
                return None
            per_operand.append(dims)
            ranks.append(len(dims))
        elif isinstance(kind, tuple):
            per_operand.append(tuple(_plain(s) for s in kind))
            ranks.append(len(kind))
        else:
            return None
    parsed = parse_einsum(attrs.extra["equation"], ranks)
    if parsed is None:
        return None
    terms, rhs = parsed
    out = []
    for letter, size in zip(rhs, shape):
        found = [dims[t.index(letter)] for t, dims in zip(terms, per_operand) if letter in t]
        full = [d for d in found if d.size == size]
        carrying = [d for d in full if d.spatial]
        if not full:
            return None
        out.append(carrying[0] if carrying else full[0])
    return tuple(out)


def contracted(g: nx.DiGraph, name: str) -> list[tuple[int, int]]:
    """(input slot, dim) pairs whose entries each output value mixes: a softmax's dim, a
    Linear's or matmul's contracted dim, attention's key/value tokens, a reduced dim."""
    data = g.nodes[name]
    op, attrs, inputs = data["op"], data["attrs"], data["inputs"]
    facts = [g.nodes[i].get("provenance") for i in inputs]
    if not inputs or facts[0] is None:
        return []
    rank = len(facts[0])
    if op == "softmax":
        return [(0, (attrs.axis if attrs.axis is not None else -1) % rank)]
    if op == "linear":
        return [(0, rank - 1)]
    if op == "reduce":
        return [(0, d % rank) for d in attrs.extra["dims"]]
    if op == "matmul":
        if attrs.extra.get("weight") is not None:
            return [(0, rank - 1)] if attrs.extra["weight"]["slot"] == 1 else []
        if len(inputs) < 2 or facts[1] is None:
            return []
        return [(0, rank - 1), (1, len(facts[1]) - 2)]
    if op == "attention":
        seq = attrs.extra.get("seq_dim", -2)
        out = []
        for slot in (1, 2):
            if slot < len(inputs) and facts[slot] is not None:
                out.append((slot, seq % len(facts[slot])))
        return out
    if op == "einsum":
        ranks = [len(f) if f is not None else 0 for f in facts]
        kinds = attrs.extra["operands"]
        all_ranks, it = [], iter(ranks)
        for k in kinds:
            all_ranks.append(next(it, 0) if k == "act" else len(k) if isinstance(k, tuple) else 0)
        parsed = parse_einsum(attrs.extra["equation"], all_ranks)
        if parsed is None:
            return []
        terms, rhs = parsed
        out, slot = [], 0
        for t, k in zip(terms, kinds):
            if k == "act":
                out.extend((slot, i) for i, c in enumerate(t) if c not in rhs)
                slot += 1
        return out
    return []
