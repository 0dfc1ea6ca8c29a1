"""Progressions: an exact, compact description of a set of sizes, and its wording."""

from __future__ import annotations

from typing import Iterable

import numpy as np

#: Longest period the progression finder tries.
MAX_PERIOD = 1024



def progressions(mask: np.ndarray, lo: int) -> list[dict[str, int | None]]:
    """Arithmetic progressions whose union is exactly ``{lo + i : mask[i]}``.

    ``stop`` is exclusive; None means "through the end of the range". An eventually periodic
    tail becomes one progression per residue; what is left before it becomes runs of step 1.
    """
    mask = np.asarray(mask, dtype=bool)
    n = len(mask)
    if not mask.any():
        return []
    period, tail = _best_period(mask)
    covered = np.zeros(n, dtype=bool)
    out: list[dict[str, int | None]] = []
    if tail < n:
        for first in range(tail, min(tail + period, n)):
            if not mask[first]:
                continue
            start = first
            while start - period >= 0 and mask[start - period]:
                start -= period
            covered[start::period] = True
            out.append({"start": lo + start, "stop": None, "step": period})
    rest = mask[:tail] & ~covered[:tail]
    for a, b in _runs(rest):
        out.append({"start": lo + a, "stop": lo + b, "step": 1})
    out.sort(key=lambda p: (p["start"], p["step"]))
    return out


def expand_progressions(progs: Iterable[dict[str, int | None]], lo: int, hi: int) -> np.ndarray:
    """The mask over ``lo..hi`` a list of progressions describes (inverse of progressions)."""
    mask = np.zeros(hi - lo + 1, dtype=bool)
    for p in progs:
        stop = hi + 1 if p["stop"] is None else p["stop"]
        mask[p["start"] - lo: stop - lo: p["step"]] = True
    return mask


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges of consecutive True values."""
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _best_period(mask: np.ndarray) -> tuple[int, int]:
    """(period, tail start) giving the fewest progressions; tail == len(mask) if none."""
    n = len(mask)
    best = (len(_runs(mask)) + 0.5, 1, n)  # on a tie, an open-ended tail reads better
    for period in range(1, min(MAX_PERIOD, n // 2) + 1):
        differs = np.flatnonzero(mask[period:] != mask[:-period])
        tail = int(differs[-1]) + 1 if len(differs) else 0
        if n - tail < 2 * period:  # too short to call periodic
            continue
        prefix = mask[:tail]
        score = int(mask[tail: tail + period].sum()) + (len(_runs(prefix)) if prefix.any() else 0)
        if score < best[0]:
            best = (score, period, tail)
            if score <= 1:
                break
    return best[1], best[2]


def describe_sizes(mask: np.ndarray, lo: int, hi: int) -> str:
    """A compact description: "n >= 32 with n % 32 == 0", "64..67 only", "none", "all n >= 5"."""
    progs = progressions(mask, lo)
    if not progs:
        return "none"
    finite = [p for p in progs if p["stop"] is not None]
    tails = [p for p in progs if p["stop"] is None]
    if len(finite) + len(tails) > 6:
        values = lo + np.flatnonzero(mask)
        sample = ", ".join(str(v) for v in values[:4])
        return f"{len(values)} sizes between {values[0]} and {values[-1]} (irregular), e.g. {sample}"
    parts = []
    for p in finite:
        last = p["stop"] - 1
        if p["step"] != 1:
            parts.append(f"{p['start']}..{last} step {p['step']}")
        else:
            parts.append(str(p["start"]) if last == p["start"] else f"{p['start']}..{last}")
    if tails:
        parts.append(_describe_tail(tails))
    text = ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]
    return text if tails else text + " only"


def _describe_tail(tails: list[dict[str, int | None]]) -> str:
    step = tails[0]["step"]
    start = min(p["start"] for p in tails)
    if step == 1:
        return f"all n >= {start}"
    # one bound covers every residue when each progression starts within a period of it
    if all(p["step"] == step and p["start"] < start + step for p in tails):
        residues = sorted(p["start"] % step for p in tails)
        if len(residues) == 1:
            return f"n >= {start} with n % {step} == {residues[0]}"
        return f"n >= {start} with n % {step} in {{{', '.join(map(str, residues))}}}"
    return " or ".join(f"n >= {p['start']} with n % {p['step']} == {p['start'] % p['step']}"
                       for p in tails)
